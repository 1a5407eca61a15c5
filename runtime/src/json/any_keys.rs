//! JSON for maps whose keys are not strings. A JSON object's keys are strings: serde_json
//! writes integer keys as their decimal text and refuses the rest ("key must be a string"),
//! so a state holding a `HashMap<(u8, u8), _>` or a `BTreeMap<bool, _>` could not be shown.
//! [`AnyKeys`] wraps a value on its way to a serializer and rewrites each map it holds, at
//! any depth:
//! - keys that are strings, numbers, booleans or characters (or unit enum variants): an
//!   object, each key its text (`{"7": ..}`, `{"true": ..}`), as serde_json writes integers;
//! - any other key (a tuple, a struct, an enum variant with data): an array of
//!   `[key, value]` pairs (`[[[1, 2], "a"], ...]`), each key as JSON.
//!
//! A map's keys have one type, so its first key decides its form; an empty map is `{}`.
//! Everything else passes to the wrapped serializer unchanged. Keys are built as
//! `serde_json::Value`s (they are small); values are streamed.

use serde::ser::{self, Serialize, Serializer};
use serde_json::Value;

/// `value`, serialized with every map's keys made JSON (see the module docs).
pub(crate) struct AnyKeys<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Serialize + ?Sized> Serialize for AnyKeys<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Adapter(serializer))
    }
}

/// The serializer [`AnyKeys`] hands a value: `S`, with maps rewritten and every nested
/// value wrapped again.
struct Adapter<S>(S);

/// A sequence, tuple or struct of `S` whose elements are wrapped in [`AnyKeys`].
struct Compound<C>(C);

/// A map of `S` on its way to one of its two forms.
struct Map<S: Serializer> {
    form: Form<S>,
    /// In the pairs form: the key whose value comes next.
    key: Option<Value>,
}

enum Form<S: Serializer> {
    /// No key seen yet (`None` once the serializer was taken and failed).
    Undecided(Option<S>, Option<usize>),
    Object(S::SerializeMap),
    Pairs(S::SerializeSeq),
}

/// A key's text, if it can be an object key.
fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn error<E: ser::Error>(what: &str) -> E {
    E::custom(format!("cannot write a map as JSON: {what}"))
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method(self, $($arg: $ty),*) -> Result<S::Ok, S::Error> {
            self.0.$method($($arg),*)
        })*
    };
}

impl<S: Serializer> Serializer for Adapter<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<S::SerializeSeq>;
    type SerializeTuple = Compound<S::SerializeTuple>;
    type SerializeTupleStruct = Compound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<S::SerializeTupleVariant>;
    type SerializeMap = Map<S>;
    type SerializeStruct = Compound<S::SerializeStruct>;
    type SerializeStructVariant = Compound<S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&AnyKeys(value))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &AnyKeys(value))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &AnyKeys(value))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Compound)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Compound)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Compound)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Compound)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Map<S>, S::Error> {
        Ok(Map {
            form: Form::Undecided(Some(self.0), len),
            key: None,
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Compound)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Compound)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

impl<S: Serializer> ser::SerializeMap for Map<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_key<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<(), S::Error> {
        let key = serde_json::to_value(AnyKeys(key)).map_err(<S::Error as ser::Error>::custom)?;
        let text = key_text(&key);
        if let Form::Undecided(serializer, len) = &mut self.form {
            let (serializer, len) = (serializer.take(), *len);
            let serializer =
                serializer.ok_or_else(|| error::<S::Error>("its serializer failed"))?;
            self.form = match text {
                Some(_) => Form::Object(serializer.serialize_map(len)?),
                None => Form::Pairs(serializer.serialize_seq(len)?),
            };
        }
        match (&mut self.form, text) {
            (Form::Object(map), Some(text)) => map.serialize_key(&text),
            (Form::Pairs(_), _) => {
                self.key = Some(key);
                Ok(())
            }
            _ => Err(error(
                "its keys are of different kinds, some text and some not",
            )),
        }
    }

    fn serialize_value<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<(), S::Error> {
        match &mut self.form {
            Form::Object(map) => map.serialize_value(&AnyKeys(value)),
            Form::Pairs(pairs) => {
                let key = self
                    .key
                    .take()
                    .ok_or_else(|| error::<S::Error>("a value without a key"))?;
                ser::SerializeSeq::serialize_element(pairs, &(key, AnyKeys(value)))
            }
            Form::Undecided(..) => Err(error("a value without a key")),
        }
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        match self.form {
            Form::Undecided(Some(serializer), _) => {
                ser::SerializeMap::end(serializer.serialize_map(Some(0))?)
            }
            Form::Undecided(None, _) => Err(error("its serializer failed")),
            Form::Object(map) => map.end(),
            Form::Pairs(pairs) => ser::SerializeSeq::end(pairs),
        }
    }
}

impl<C: ser::SerializeSeq> ser::SerializeSeq for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_element(&AnyKeys(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: ser::SerializeTuple> ser::SerializeTuple for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_element(&AnyKeys(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: ser::SerializeTupleStruct> ser::SerializeTupleStruct for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_field(&AnyKeys(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: ser::SerializeTupleVariant> ser::SerializeTupleVariant for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_field(&AnyKeys(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: ser::SerializeStruct> ser::SerializeStruct for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        self.0.serialize_field(key, &AnyKeys(value))
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.0.skip_field(key)
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: ser::SerializeStructVariant> ser::SerializeStructVariant for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        self.0.serialize_field(key, &AnyKeys(value))
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.0.skip_field(key)
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::AnyKeys;

    fn json_of<T: serde::Serialize>(value: &T) -> serde_json::Value {
        serde_json::from_slice(&serde_json::to_vec(&AnyKeys(value)).unwrap()).unwrap()
    }

    #[test]
    fn text_keys_make_objects_and_other_keys_make_pairs_at_any_depth() {
        let numbers = BTreeMap::from([(2u32, "b"), (10, "j")]);
        assert_eq!(json_of(&numbers), json!({"2": "b", "10": "j"}));
        let flags = BTreeMap::from([(false, 0), (true, 1)]);
        assert_eq!(json_of(&flags), json!({"false": 0, "true": 1}));
        let cells = BTreeMap::from([((1u8, 2u8), 'x'), ((3, 4), 'y')]);
        assert_eq!(json_of(&cells), json!([[[1, 2], "x"], [[3, 4], "y"]]));
        // Inside a vector, inside an option, as values and as keys.
        let nested = vec![Some(BTreeMap::from([((1u8, 1u8), numbers.clone())]))];
        assert_eq!(json_of(&nested), json!([[[[1, 1], {"2": "b", "10": "j"}]]]));
        let empty: BTreeMap<(u8, u8), u8> = BTreeMap::new();
        assert_eq!(json_of(&empty), json!({}));
    }
}
