//! `#[derive(Actor)]`: parse the `#[actor(...)]` options, validate, implement `gears::Actor`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, LitStr, Type};

struct Options {
    name: Option<LitStr>,
    events: Option<Type>,
}

fn parse_options(input: &DeriveInput, errors: &mut Vec<syn::Error>) -> Options {
    let mut options = Options {
        name: None,
        events: None,
    };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("actor")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let name: LitStr = meta.value()?.parse()?;
                if options.name.is_some() {
                    return Err(meta.error("`name` is given twice"));
                }
                options.name = Some(name);
                Ok(())
            } else if meta.path.is_ident("events") {
                let events: Type = meta.value()?.parse()?;
                if options.events.is_some() {
                    return Err(meta.error("`events` is given twice"));
                }
                options.events = Some(events);
                Ok(())
            } else {
                let option = meta
                    .path
                    .get_ident()
                    .map_or_else(|| "?".to_string(), ToString::to_string);
                Err(meta.error(format!(
                    "unknown actor option `{option}`; the accepted options are `name = \"...\"` \
                     and `events = EventType`"
                )))
            }
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    options
}

fn validate(input: &DeriveInput, options: &Options, errors: &mut Vec<syn::Error>) {
    if !input.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &input.generics,
            "actor types cannot be generic: each actor type needs one stable storage name",
        ));
    }
    if let Some(name) = &options.name {
        let value = name.value();
        let ok = !value.is_empty()
            && value.len() <= 200
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            errors.push(syn::Error::new_spanned(
                name,
                "actor names are 1 to 200 characters of ASCII letters, digits, `_`, `-` or `.`",
            ));
        }
    }
}

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = Vec::new();
    let options = parse_options(&input, &mut errors);
    validate(&input, &options, &mut errors);
    let errors = errors
        .into_iter()
        .reduce(|mut a, b| {
            a.combine(b);
            a
        })
        .map(|e| e.to_compile_error());

    // Generic types get no impl (it could not compile); otherwise the impl is still emitted
    // next to any option error, so one mistake gives one message.
    if !input.generics.params.is_empty() {
        return errors.unwrap_or_default();
    }
    let ident = &input.ident;
    let name = options
        .name
        .map_or_else(|| ident.to_string(), |n| n.value());
    let events = options.events.map_or_else(|| quote!(()), |ty| quote!(#ty));
    quote! {
        #errors
        impl ::gears::Actor for #ident {
            const NAME: &'static str = #name;
            type Event = #events;
        }
    }
}
