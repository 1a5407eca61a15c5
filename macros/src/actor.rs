//! `#[derive(Actor)]` and `#[derive(StateVersion)]`: parse the `#[actor(...)]` or
//! `#[state(...)]` options, validate, implement `gears::Actor` and `gears::StateVersion`.
//! `#[derive(Actor)]` also declares the type's `<Type>Handle`, `<Type>Mail` and
//! `<Type>Message`, whose handler methods and variants `#[handlers]` fills in.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{DeriveInput, LitInt, LitStr, Type};

struct Options {
    name: Option<LitStr>,
    events: Option<Type>,
    version: Option<LitInt>,
    previous: Option<Type>,
}

/// Parses `version = N` and `previous = Type`, shared by `#[actor]` and `#[state]`; false if
/// the option is neither.
fn parse_version_option(
    meta: &syn::meta::ParseNestedMeta<'_>,
    options: &mut Options,
) -> syn::Result<bool> {
    if meta.path.is_ident("version") {
        let version: LitInt = meta.value()?.parse()?;
        if options.version.is_some() {
            return Err(meta.error("`version` is given twice"));
        }
        match version.base10_parse::<u32>() {
            Ok(v) if v >= 1 => {}
            _ => {
                return Err(syn::Error::new_spanned(
                    &version,
                    "a state version is a number from 1 to 4294967295",
                ));
            }
        }
        options.version = Some(version);
        Ok(true)
    } else if meta.path.is_ident("previous") {
        let previous: Type = meta.value()?.parse()?;
        if options.previous.is_some() {
            return Err(meta.error("`previous` is given twice"));
        }
        options.previous = Some(previous);
        Ok(true)
    } else {
        Ok(false)
    }
}

fn parse_options(input: &DeriveInput, errors: &mut Vec<syn::Error>) -> Options {
    let mut options = Options {
        name: None,
        events: None,
        version: None,
        previous: None,
    };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("actor")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if parse_version_option(&meta, &mut options)? {
                Ok(())
            } else if meta.path.is_ident("name") {
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
                    "unknown actor option `{option}`; the accepted options are `name = \"...\"`, \
                     `events = EventType`, `version = N` and `previous = OlderStateType`"
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
    if let (Some(previous), None) = (&options.previous, &options.version) {
        errors.push(syn::Error::new_spanned(
            previous,
            "a state with a `previous` version says which version it is: add `version = N` \
             (higher than the previous one's)",
        ));
    }
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
        .as_ref()
        .map_or_else(|| ident.to_string(), LitStr::value);
    let events = options
        .events
        .as_ref()
        .map_or_else(|| quote!(()), |ty| quote!(#ty));
    let version = state_version(ident, &options);
    let names = handler_names(ident, &input.vis);
    quote! {
        #errors
        impl ::gears::Actor for #ident {
            const NAME: &'static str = #name;
            type Event = #events;
        }
        #version
        #names
    }
}

/// `<Type>Handle`, `<Type>Mail` and `<Type>Message`: declared here, once per type, so that
/// the `#[handlers]` block (which adds their handler methods and variants) generates no
/// other named item, and a second block on the type is one clear error. Unused (and
/// harmless) on a type without handlers.
fn handler_names(ident: &syn::Ident, vis: &syn::Visibility) -> TokenStream {
    let private = quote!(::gears::__private);
    let handle = format_ident!("{}Handle", ident);
    let mail = format_ident!("{}Mail", ident);
    let message = format_ident!("{}Message", ident);
    let message_doc = format!(
        "One message per handler of [`{ident}`], with its arguments (one variant per \
         handler, named after it in PascalCase): what sends, timers and HTTP carry. Its \
         variants are generated by `#[handlers]`."
    );
    let mail_doc = format!(
        "A message to one [`{ident}`] actor, one method per handler: returned by `ctx.send`, \
         `ctx.timer` and `Runtime::send`. Its methods are generated by `#[handlers]`."
    );
    let handle_doc = format!(
        "Typed handle to one [`{ident}`] actor: one async method per handler. Cheap to clone. \
         Its handler methods are generated by `#[handlers]`."
    );
    // A mail or a handle on its own does nothing: forgetting the handler call compiles, so
    // the compiler is asked to say so.
    let mail_must_use = format!(
        "nothing is sent or scheduled until a handler method is called on this \
         `{ident}Mail`: `ctx.send::<{ident}>(key).handler(args)`, \
         `ctx.timer::<Self>(name, when).handler(args)` or \
         `rt.send::<{ident}>(key).handler(args).await`"
    );
    let handle_must_use = format!(
        "a `{ident}Handle` calls nothing until one of its handler methods is called and \
         awaited: `.handler(args).await`"
    );
    quote! {
        #[doc = #message_doc]
        #vis type #message = <#ident as ::gears::Handlers>::Message;

        #[doc = #mail_doc]
        #[must_use = #mail_must_use]
        pub struct #mail<D>(D);

        #[doc = #handle_doc]
        #[derive(Clone, Debug)]
        #[must_use = #handle_must_use]
        pub struct #handle(#private::Caller<#ident>);

        impl #handle {
            /// The key of the actor this handle addresses.
            pub fn key(&self) -> &str {
                self.0.key()
            }

            /// The same handle, its calls waiting at most `timeout` for their reply instead
            /// of the runtime's call timeout (clones keep it): `handle.timeout(d).handler(..)`
            /// fails with `CallError::Timeout(d)` once it has waited `d`.
            ///
            /// Only the caller stops waiting; the call's turn stays whole. A turn that had
            /// started runs on and commits in full or not at all (bounded, as every turn, by
            /// the runtime's call timeout), and a call still queued when its caller gave up
            /// does not run. A timed-out call that changes state may or may not have been
            /// applied: read the state, or repeat an idempotent call, to know.
            pub fn timeout(self, timeout: ::core::time::Duration) -> Self {
                #handle(self.0.with_timeout(timeout))
            }
        }
    }
}

/// `impl StateVersion`: this version's number, and how a record of an older version is read
/// (through `previous` and `From`, version by version).
fn state_version(ident: &syn::Ident, options: &Options) -> TokenStream {
    // Without a version, the one error about it is enough: no order check against `previous`.
    let checked = options.version.is_some() || options.previous.is_none();
    let private = quote!(::gears::__private);
    let version = options
        .version
        .as_ref()
        .map_or_else(|| quote!(1u32), |v| quote!(#v));
    let (decode, check) = match &options.previous {
        None => (
            quote!(#private::decode_version::<Self>(version, bytes)),
            TokenStream::new(),
        ),
        Some(previous) if !checked => (
            quote!(#private::decode_or_migrate::<Self, #previous>(version, bytes)),
            TokenStream::new(),
        ),
        Some(previous) => (
            quote!(#private::decode_or_migrate::<Self, #previous>(version, bytes)),
            quote! {
                const _: () = ::core::assert!(
                    <#previous as ::gears::StateVersion>::VERSION < #version,
                    "the `previous` version of a state must have a lower `version` number"
                );
            },
        ),
    };
    quote! {
        impl ::gears::StateVersion for #ident {
            const VERSION: u32 = #version;

            fn __decode_version(
                version: u32,
                bytes: &[u8],
            ) -> ::core::result::Result<Self, ::std::string::String> {
                #decode
            }
        }
        #check
    }
}

/// `#[derive(StateVersion)]`: an older shape of an actor's state, kept so that records
/// written by it can still be read.
pub(crate) fn expand_state_version(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = Vec::new();
    let mut options = Options {
        name: None,
        events: None,
        version: None,
        previous: None,
    };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("state")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if parse_version_option(&meta, &mut options)? {
                Ok(())
            } else {
                Err(meta.error(
                    "unknown state option; the accepted options are `version = N` and \
                     `previous = OlderStateType`",
                ))
            }
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    if options.version.is_none() {
        errors.push(syn::Error::new_spanned(
            &input.ident,
            "an older state version says which it is: `#[state(version = N)]` (and \
             `previous = OlderStateType` if there is an older one still)",
        ));
    }
    if !input.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &input.generics,
            "state versions cannot be generic",
        ));
    }
    let errors = errors
        .into_iter()
        .reduce(|mut a, b| {
            a.combine(b);
            a
        })
        .map(|e| e.to_compile_error());
    if !input.generics.params.is_empty() {
        return errors.unwrap_or_default();
    }
    let version = state_version(&input.ident, &options);
    quote! {
        #errors
        #version
    }
}
