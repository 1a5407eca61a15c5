//! What `#[handlers]` tells about a type's handlers for the HTTP ingress' OpenAPI document
//! (`GET /openapi.json`, feature `http`): the JSON Schemas of the state, each handler's
//! arguments, result and error, and its doc comment.
//!
//! The generated code is the same with the feature on or off: without it every call here
//! does nothing. A type's schema comes from `schemars::JsonSchema` where the type implements
//! it, chosen where the type is concrete by [`SchemaProbe`]'s autoref specialisation (as
//! `ReplyProbe` chooses encoding); a type without it is described as "any JSON value", so
//! no bound is asked of the user's types.

use std::marker::PhantomData;

/// A JSON Schema: a JSON value with the feature `http`, nothing without.
#[cfg(feature = "http")]
pub type Schema = serde_json::Value;
/// A JSON Schema: a JSON value with the feature `http`, nothing without.
#[cfg(not(feature = "http"))]
pub type Schema = ();

/// One handler as the OpenAPI document shows it.
#[cfg(feature = "http")]
pub(crate) struct HandlerSchema {
    pub(crate) name: &'static str,
    pub(crate) doc: &'static str,
    /// Argument name, whether the body must hold it, its schema.
    pub(crate) args: Vec<(&'static str, bool, Schema)>,
    pub(crate) result: Schema,
    /// The handler error's schema, for `Result<T, E>` handlers.
    pub(crate) error: Option<Schema>,
}

/// Collects the schemas of the types of one or more actor types (their shared definitions
/// once, under `#/components/schemas`).
#[doc(hidden)]
pub struct SchemaSink {
    #[cfg(feature = "http")]
    pub(crate) generator: schemars::SchemaGenerator,
    #[cfg(feature = "http")]
    pub(crate) state: Option<Schema>,
    #[cfg(feature = "http")]
    pub(crate) handlers: Vec<HandlerSchema>,
}

#[cfg(feature = "http")]
impl SchemaSink {
    pub(crate) fn new() -> Self {
        let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        });
        SchemaSink {
            generator: settings.into_generator(),
            state: None,
            handlers: Vec::new(),
        }
    }

    /// The actor's state (`GET /{type}/{key}`).
    pub fn state(&mut self, schema: Schema) {
        self.state = Some(schema);
    }

    /// Starts the next handler: its arguments, result and error follow.
    pub fn handler(&mut self, name: &'static str, doc: &'static str) {
        self.handlers.push(HandlerSchema {
            name,
            doc,
            args: Vec::new(),
            result: serde_json::json!({}),
            error: None,
        });
    }

    /// An argument of the current handler: a field of its JSON body.
    pub fn argument(&mut self, name: &'static str, required: bool, schema: Schema) {
        if let Some(h) = self.handlers.last_mut() {
            h.args.push((name, required, schema));
        }
    }

    /// What the current handler answers.
    pub fn result(&mut self, schema: Schema) {
        if let Some(h) = self.handlers.last_mut() {
            h.result = schema;
        }
    }

    /// The current handler's error (`Result<T, E>`'s `E`): the `detail` of its 422.
    pub fn error(&mut self, schema: Schema) {
        if let Some(h) = self.handlers.last_mut() {
            h.error = Some(schema);
        }
    }
}

/// Without the feature `http` nothing is collected.
#[cfg(not(feature = "http"))]
impl SchemaSink {
    /// The actor's state.
    pub fn state(&mut self, _schema: Schema) {}
    /// Starts the next handler.
    pub fn handler(&mut self, _name: &'static str, _doc: &'static str) {}
    /// An argument of the current handler.
    pub fn argument(&mut self, _name: &'static str, _required: bool, _schema: Schema) {}
    /// What the current handler answers.
    pub fn result(&mut self, _schema: Schema) {}
    /// The current handler's error.
    pub fn error(&mut self, _schema: Schema) {}
}

/// Chooses, in the code `#[handlers]` generates, between a type's own JSON Schema and "any
/// JSON value": a method call on `&&SchemaProbe<T>` finds [`JsonSchemaProbe`] (implemented
/// for `&SchemaProbe<T>` where `T: JsonSchema`, with the feature `http`) first, and falls
/// back through one dereference to [`OpaqueSchemaProbe`] (every `SchemaProbe<T>`).
#[doc(hidden)]
pub struct SchemaProbe<T: ?Sized>(PhantomData<fn() -> T>);

impl<T: ?Sized> SchemaProbe<T> {
    /// The probe for `T`.
    pub const NEW: Self = SchemaProbe(PhantomData);
}

/// The probe's choice when the type has a JSON Schema.
#[doc(hidden)]
pub trait JsonSchemaProbe {
    /// The type's schema (a reference to its definition, for named types).
    fn schema(&self, sink: &mut SchemaSink) -> Schema;
}

#[cfg(feature = "http")]
impl<T: schemars::JsonSchema + ?Sized> JsonSchemaProbe for &SchemaProbe<T> {
    fn schema(&self, sink: &mut SchemaSink) -> Schema {
        sink.generator.subschema_for::<T>().to_value()
    }
}

/// The probe's fallback: any JSON value, saying why.
#[doc(hidden)]
pub trait OpaqueSchemaProbe {
    /// "Any JSON value".
    fn schema(&self, sink: &mut SchemaSink) -> Schema;
}

impl<T: ?Sized> OpaqueSchemaProbe for SchemaProbe<T> {
    fn schema(&self, _sink: &mut SchemaSink) -> Schema {
        #[cfg(feature = "http")]
        return serde_json::json!({
            "description": format!(
                "`{}` has no JSON Schema (derive `schemars::JsonSchema` for it)",
                std::any::type_name::<T>()
            )
        });
        #[cfg(not(feature = "http"))]
        ()
    }
}
