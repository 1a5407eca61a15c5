//! `#[handlers]`: parse the impl block, validate every method, generate the message enum,
//! the typed handle and the `gears::Handlers` implementation.
//!
//! On errors the user's impl block is still emitted, so one mistake gives one message.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemImpl, Pat, PathArguments,
    ReturnType, Type,
};

/// What a handler returns (built once per handler at compile time: size does not matter).
#[allow(clippy::large_enum_variant)]
enum Returns {
    /// `-> T` (or nothing): the call cannot fail with a handler error.
    Value(Type),
    /// `-> Result<T, E>`: `Err` rolls the turn back and reaches the caller as
    /// `CallError::Handler(E)`.
    Result(Type, Type),
}

struct Handler {
    method: Ident,
    /// The handler's stable name: in stored and sent messages, HTTP paths and errors. The
    /// method's name unless `#[handler(name = "...")]` gives another.
    name: String,
    /// Where the name was given, for errors about it.
    name_span: proc_macro2::Span,
    variant: Ident,
    docs: Vec<Attribute>,
    mutates: bool,
    /// `#[handler(internal)]`: callable by actors, sends, timers and in-process handles, not
    /// over HTTP.
    internal: bool,
    /// `#[handler(commit_errors)]`: an `Err` commits the turn instead of rolling it back.
    commit_errors: bool,
    takes_context: bool,
    args: Vec<(Ident, Type)>,
    returns: Returns,
}

fn pascal_case(ident: &Ident) -> Ident {
    let mut out = String::new();
    for part in ident.to_string().trim_start_matches("r#").split('_') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    if out.is_empty() {
        out.push_str("Handler");
    }
    Ident::new(&out, ident.span())
}

/// The text of `#[doc = "..."]` attributes, lines joined (the leading space of `///` dropped).
fn doc_text(docs: &[Attribute]) -> String {
    let lines: Vec<String> = docs
        .iter()
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').unwrap_or(&line).to_owned())
        .collect();
    lines.join("\n").trim().to_owned()
}

/// `Option<..>` (by its last path segment): an argument the JSON body may leave out.
fn is_option(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "Option"))
}

fn is_context(ty: &Type) -> Option<bool> {
    let Type::Reference(r) = ty else {
        return None;
    };
    let Type::Path(p) = &*r.elem else {
        return None;
    };
    let last = p.path.segments.last()?;
    (last.ident == "Context").then_some(r.mutability.is_some())
}

fn parse_returns(output: &ReturnType, errors: &mut Vec<syn::Error>) -> Returns {
    let ty = match output {
        ReturnType::Default => return Returns::Value(syn::parse_quote!(())),
        ReturnType::Type(_, ty) => &**ty,
    };
    if let Type::Path(p) = ty
        && p.qself.is_none()
        && let Some(last) = p.path.segments.last()
        && last.ident == "Result"
    {
        if let PathArguments::AngleBracketed(args) = &last.arguments {
            let types: Vec<&Type> = args
                .args
                .iter()
                .filter_map(|a| match a {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                })
                .collect();
            if let [ok, err] = types[..] {
                return Returns::Result(ok.clone(), err.clone());
            }
        }
        errors.push(syn::Error::new_spanned(
            ty,
            "a handler returning `Result` must name both types, `Result<T, E>`, so Gears can \
             roll the turn back on `Err` and type the caller's `CallError<E>`",
        ));
    }
    Returns::Value(ty.clone())
}

/// The options of a handler's `#[handler(...)]` attributes.
#[derive(Default)]
struct HandlerOptions {
    internal: bool,
    name: Option<syn::LitStr>,
    /// Where `commit_errors` was written, for the error if the handler cannot fail.
    commit_errors: Option<proc_macro2::Span>,
}

/// Whether `name` can name a handler: 1 to 200 ASCII letters, digits, `_`, `-` or `.` (it
/// is stored with messages and is a segment of HTTP paths).
fn valid_handler_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether `attr` is a `#[handler(...)]` attribute (which `#[handlers]` consumes).
fn is_handler_attr(attr: &Attribute) -> bool {
    attr.path().is_ident("handler")
}

fn parse_options(attrs: &[Attribute], errors: &mut Vec<syn::Error>) -> HandlerOptions {
    let mut options = HandlerOptions::default();
    for attr in attrs.iter().filter(|a| is_handler_attr(a)) {
        let syn::Meta::List(list) = &attr.meta else {
            errors.push(syn::Error::new_spanned(
                attr,
                "write `#[handler(internal)]`: `#[handler]` takes its options in parentheses",
            ));
            continue;
        };
        let parsed = list.parse_nested_meta(|meta| {
            if meta.path.is_ident("internal") {
                if options.internal {
                    return Err(meta.error("`internal` is given twice"));
                }
                options.internal = true;
                Ok(())
            } else if meta.path.is_ident("commit_errors") {
                if options.commit_errors.is_some() {
                    return Err(meta.error("`commit_errors` is given twice"));
                }
                options.commit_errors = Some(meta.path.span());
                Ok(())
            } else if meta.path.is_ident("name") {
                if options.name.is_some() {
                    return Err(meta.error("`name` is given twice"));
                }
                let name: syn::LitStr = meta.value()?.parse()?;
                if !valid_handler_name(&name.value()) {
                    return Err(syn::Error::new_spanned(
                        &name,
                        "a handler name is 1 to 200 ASCII letters, digits, `_`, `-` or `.`",
                    ));
                }
                options.name = Some(name);
                Ok(())
            } else {
                Err(meta.error(
                    "unknown handler option; the accepted ones are `internal` (callable by \
                     actors, sends and timers, not over HTTP), `name = \"...\"` (the \
                     handler's stable name in stored messages and HTTP paths) and \
                     `commit_errors` (an `Err` is committed, not rolled back)",
                ))
            }
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    options
}

fn parse_handler(f: &ImplItemFn, errors: &mut Vec<syn::Error>) -> Option<Handler> {
    let sig = &f.sig;
    let before = errors.len();
    let options = parse_options(&f.attrs, errors);
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            "handlers must be `async fn`; put helper methods in a separate `impl` block",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "handlers cannot be generic: their arguments travel as one serializable message type",
        ));
    }
    let mut inputs = sig.inputs.iter();
    let mutates = match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.colon_token.is_none() => {
            r.mutability.is_some()
        }
        Some(FnArg::Receiver(r)) if r.reference.is_none() && r.colon_token.is_none() => {
            errors.push(syn::Error::new_spanned(
                r,
                "a handler takes `&self` (read-only) or `&mut self` (exclusive), not `self` by value",
            ));
            false
        }
        Some(FnArg::Receiver(r)) => match &*r.ty {
            Type::Reference(t) if matches!(&*t.elem, Type::Path(p) if p.path.is_ident("Self")) => {
                t.mutability.is_some()
            }
            _ => {
                errors.push(syn::Error::new_spanned(
                    r,
                    "a handler's receiver is written `&self` (read-only) or `&mut self` (exclusive)",
                ));
                false
            }
        },
        _ => {
            errors.push(syn::Error::new_spanned(
                &sig.ident,
                "handlers take `&self` or `&mut self` as their first parameter",
            ));
            false
        }
    };
    let mut takes_context = false;
    let mut args = Vec::new();
    for (position, input) in inputs.enumerate() {
        let FnArg::Typed(arg) = input else { continue };
        match is_context(&arg.ty) {
            Some(false) if position == 0 => {
                takes_context = true;
                continue;
            }
            Some(false) => {
                errors.push(syn::Error::new_spanned(
                    arg,
                    "`&Context` must come right after the receiver",
                ));
                continue;
            }
            Some(true) => {
                errors.push(syn::Error::new_spanned(
                    &arg.ty,
                    "handlers take `&Context`, not `&mut Context`",
                ));
                continue;
            }
            None => {}
        }
        let Pat::Ident(pat) = &*arg.pat else {
            errors.push(syn::Error::new_spanned(
                &arg.pat,
                "handler arguments must be plain names (`qty: u32`), not patterns",
            ));
            continue;
        };
        if matches!(&*arg.ty, Type::Reference(_) | Type::ImplTrait(_)) {
            errors.push(syn::Error::new_spanned(
                &arg.ty,
                "handler arguments must be owned serializable types (they travel in a message)",
            ));
            continue;
        }
        args.push((pat.ident.clone(), (*arg.ty).clone()));
    }
    let returns = parse_returns(&sig.output, errors);
    if let (Some(span), Returns::Value(_)) = (options.commit_errors, &returns) {
        errors.push(syn::Error::new(
            span,
            "`commit_errors` is for a handler returning `Result<T, E>`, whose `Err` it \
             commits instead of rolling back; this handler does not return a `Result`, so it \
             has no error to commit",
        ));
    }
    if errors.len() > before {
        return None;
    }
    let (name, name_span) = match &options.name {
        Some(name) => (name.value(), name.span()),
        None => (
            sig.ident.to_string().trim_start_matches("r#").to_string(),
            sig.ident.span(),
        ),
    };
    Some(Handler {
        method: sig.ident.clone(),
        name,
        name_span,
        variant: pascal_case(&sig.ident),
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        mutates,
        internal: options.internal,
        commit_errors: options.commit_errors.is_some(),
        takes_context,
        args,
        returns,
    })
}

/// Where a handler's arguments are written (its name if it takes none).
fn arguments_span(h: &Handler) -> proc_macro2::Span {
    h.args
        .first()
        .map_or_else(|| h.method.span(), |(_, ty)| ty.span())
}

/// The generated handle's own methods, which no handler method may be named: the name and
/// what it does.
const HANDLE_METHODS: &[(&str, &str)] = &[
    ("key", "the key the handle addresses"),
    (
        "timeout",
        "`handle.timeout(d)` bounds how long its calls wait",
    ),
];

fn self_ident(item: &ItemImpl) -> Result<Ident, syn::Error> {
    if let Type::Path(p) = &*item.self_ty
        && let Some(last) = p.path.segments.last()
        && last.arguments.is_empty()
    {
        return Ok(last.ident.clone());
    }
    Err(syn::Error::new_spanned(
        &item.self_ty,
        "`#[handlers]` goes on `impl MyActor { ... }` of a non-generic actor struct",
    ))
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut item_impl: ItemImpl = match syn::parse2(item.clone()) {
        Ok(i) => i,
        Err(e) => {
            let err = syn::Error::new(
                e.span(),
                "`#[handlers]` goes on an inherent `impl` block of an actor struct",
            )
            .to_compile_error();
            return quote!(#item #err);
        }
    };
    let mut errors = Vec::new();
    if !attr.is_empty() {
        errors.push(syn::Error::new_spanned(
            &attr,
            "`#[handlers]` takes no options",
        ));
    }
    if let Some((_, path, _)) = &item_impl.trait_ {
        errors.push(syn::Error::new_spanned(
            path,
            "`#[handlers]` goes on an inherent `impl` block, not a trait implementation",
        ));
    }
    if !item_impl.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &item_impl.generics,
            "actor types cannot be generic",
        ));
    }
    let actor = self_ident(&item_impl).map_err(|e| errors.push(e)).ok();
    let mut handlers = Vec::new();
    for impl_item in &item_impl.items {
        match impl_item {
            ImplItem::Fn(f) => handlers.extend(parse_handler(f, &mut errors)),
            other => errors.push(syn::Error::new(
                other.span(),
                "a `#[handlers]` block holds only handler methods",
            )),
        }
    }
    for (i, h) in handlers.iter().enumerate() {
        if handlers[..i].iter().any(|other| other.name == h.name) {
            errors.push(syn::Error::new(
                h.name_span,
                format!(
                    "two handlers are named `{}`: a handler's name identifies it in stored \
                     messages, so each must be unique (rename one with `#[handler(name = \"...\")]`)",
                    h.name
                ),
            ));
        }
    }
    // The generated handle has methods of its own; a handler of the same name would clash
    // with them (as a duplicate definition, far from the user's method).
    for h in &handlers {
        let method = h.method.to_string();
        let method = method.trim_start_matches("r#");
        if let Some(what) = HANDLE_METHODS
            .iter()
            .find_map(|(name, what)| (*name == method).then_some(what))
        {
            errors.push(syn::Error::new(
                h.method.span(),
                format!(
                    "a handler cannot be named `{method}`: the generated handle has a method \
                     `{method}` ({what}); name the method otherwise, and if its messages or \
                     HTTP path must keep the name, add `#[handler(name = \"{method}\")]`"
                ),
            ));
        }
    }
    // `#[handler(...)]` is read here, not a real attribute: the emitted block drops it.
    for impl_item in &mut item_impl.items {
        if let ImplItem::Fn(f) = impl_item {
            f.attrs.retain(|a| !is_handler_attr(a));
        }
    }
    let combined = errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    });
    match (combined, actor) {
        (None, Some(actor)) => {
            let generated = generate(&actor, &handlers);
            quote!(#item_impl #generated)
        }
        (Some(err), _) => {
            let err = err.to_compile_error();
            quote!(#item_impl #err)
        }
        (None, None) => quote!(#item_impl),
    }
}

fn generate(actor: &Ident, handlers: &[Handler]) -> TokenStream {
    let message = format_ident!("{}Message", actor);
    let handle = format_ident!("{}Handle", actor);
    let private = quote!(::gears::__private);

    let variants = handlers.iter().map(|h| {
        let variant = &h.variant;
        let fields = h
            .args
            .iter()
            .map(|(name, ty)| quote_spanned!(ty.span()=> #name: #ty));
        let doc = format!("Arguments of [`{actor}::{}`].", h.method);
        quote!(#[doc = #doc] #variant { #(#fields),* })
    });

    let describe = handlers.iter().map(|h| {
        let variant = &h.variant;
        let name = &h.name;
        let mutates = h.mutates;
        quote!(#message::#variant { .. } => (#name, #mutates))
    });

    let dispatch = handlers.iter().map(|h| {
        let variant = &h.variant;
        let method = &h.method;
        let names: Vec<&Ident> = h.args.iter().map(|(n, _)| n).collect();
        let ctx = h.takes_context.then(|| quote!(__gears_ctx,));
        let wrap = match h.returns {
            Returns::Value(_) => quote!(#private::Output::value),
            Returns::Result(..) if h.commit_errors => quote!(#private::Output::committed_result),
            Returns::Result(..) => quote!(#private::Output::result),
        };
        quote! {
            #message::#variant { #(#names),* } => #wrap(self.#method(#ctx #(#names),*).await)
        }
    });

    let methods = handlers.iter().map(|h| {
        let variant = &h.variant;
        let method = &h.method;
        let docs = &h.docs;
        let names: Vec<&Ident> = h.args.iter().map(|(n, _)| n).collect();
        let params = h.args.iter().map(|(n, ty)| quote!(#n: #ty));
        let (returns, finish) = match &h.returns {
            Returns::Value(t) => (
                quote!(::core::result::Result<#t, ::gears::CallError>),
                quote!(#private::finish::<#t>),
            ),
            Returns::Result(t, e) => (
                quote!(::core::result::Result<#t, ::gears::CallError<#e>>),
                quote!(#private::finish_result::<#t, #e>),
            ),
        };
        quote! {
            #(#docs)*
            pub async fn #method(&self, #(#params),*) -> #returns {
                #finish(self.0.call(#message::#variant { #(#names),* }).await)
            }
        }
    });

    let mail = format_ident!("{}Mail", actor);
    let mail_methods = handlers.iter().map(|h| {
        let variant = &h.variant;
        let method = &h.method;
        let docs = &h.docs;
        let names: Vec<&Ident> = h.args.iter().map(|(n, _)| n).collect();
        let params = h.args.iter().map(|(n, ty)| quote!(#n: #ty));
        quote! {
            #(#docs)*
            pub fn #method(self, #(#params),*) -> D::Output {
                self.0.deliver(#message::#variant { #(#names),* })
            }
        }
    });

    let one_argument: Vec<_> = handlers.iter().filter(|h| h.args.len() == 1).collect();
    let event_handlers = one_argument.iter().map(|h| {
        let name = &h.name;
        let ty = &h.args[0].1;
        quote!(#name => ::core::option::Option::Some(::core::any::TypeId::of::<#ty>()))
    });

    // A message is stored and sent as its handler's name and the postcard encoding of its
    // arguments as a tuple (one argument: the argument itself, as events are encoded).
    let encodes = handlers.iter().map(|h| {
        let variant = &h.variant;
        let name = &h.name;
        let names: Vec<&Ident> = h.args.iter().map(|(n, _)| n).collect();
        // Errors about an argument's type point at the arguments.
        let span = arguments_span(h);
        let encode = quote_spanned!(span=> #private::encode_arguments(&(#(#names,)*)));
        quote! {
            #message::#variant { #(ref #names),* } => #encode.map(|args| (#name, args)),
        }
    });
    let decodes = handlers.iter().map(|h| {
        let variant = &h.variant;
        let name = &h.name;
        let names: Vec<&Ident> = h.args.iter().map(|(n, _)| n).collect();
        let types = h.args.iter().map(|(_, ty)| ty);
        let decode = quote_spanned!(arguments_span(h)=>
            #private::decode_arguments::<(#(#types,)*)>(#name, args));
        quote! {
            #name => #decode.map(|(#(#names,)*)| #message::#variant { #(#names),* })
        }
    });
    // Stores of format 1 encoded a message by its handler's position in the block (as serde
    // encodes an enum): still read, for the messages such a store holds.
    let positional = handlers.iter().enumerate().map(|(index, h)| {
        let variant = &h.variant;
        let name = &h.name;
        let index = index as u32;
        let names: Vec<&Ident> = h.args.iter().map(|(n, _)| n).collect();
        let types = h.args.iter().map(|(_, ty)| ty);
        let decode = quote_spanned!(arguments_span(h)=>
            #private::decode_arguments::<(#(#types,)*)>(#name, args));
        quote! {
            #index => #decode.map(|(#(#names,)*)| #message::#variant { #(#names),* })
        }
    });

    let infos = handlers.iter().map(|h| {
        let name = &h.name;
        let args = h.args.iter().map(|(n, _)| n.to_string());
        let mutates = h.mutates;
        let internal = h.internal;
        quote! {
            ::gears::HandlerInfo {
                name: #name,
                args: &[#(#args),*],
                mutates: #mutates,
                internal: #internal,
            }
        }
    });
    let named_messages = handlers.iter().map(|h| {
        let name = &h.name;
        let variant = &h.variant;
        let names: Vec<&Ident> = h.args.iter().map(|(n, _)| n).collect();
        let fields = h
            .args
            .iter()
            .map(|(n, ty)| quote_spanned!(ty.span()=> #n: #ty));
        quote! {
            #name => {
                #[derive(#private::serde::Deserialize)]
                #[serde(crate = "::gears::__private::serde", deny_unknown_fields)]
                struct Arguments { #(#fields),* }
                let Arguments { #(#names),* } =
                    <Arguments as #private::serde::Deserialize>::deserialize(arguments)?;
                ::core::result::Result::Ok(#message::#variant { #(#names),* })
            }
        }
    });
    // Whether a result type is `Serialize` is decided where its type is concrete (here) by
    // `ReplyProbe`'s autoref specialisation: no bound is asked of the user's types, so the
    // same code compiles whichever features of `gears` are on.
    let probe = |ty: &Type| quote_spanned!(ty.span()=> (&&#private::ReplyProbe::<#ty>::new()));
    let serializable_replies = handlers.iter().map(|h| {
        let name = &h.name;
        match &h.returns {
            Returns::Value(t) => {
                let t = probe(t);
                quote!(#name => #t.serializable())
            }
            Returns::Result(t, e) => {
                let (t, e) = (probe(t), probe(e));
                quote!(#name => #t.serializable() && #e.serializable())
            }
        }
    });
    let decode_probe =
        |ty: &Type| quote_spanned!(ty.span()=> (&&#private::DecodeProbe::<#ty>::new()));
    let storable_replies = handlers.iter().map(|h| {
        let name = &h.name;
        let types: Vec<&Type> = match &h.returns {
            Returns::Value(t) => vec![t],
            Returns::Result(t, e) => vec![t, e],
        };
        let checks = types.iter().map(|t| {
            let (p, d) = (probe(t), decode_probe(t));
            quote!(#p.serializable() && #d.decodable())
        });
        quote!(#name => #(#checks)&&*)
    });
    let decoded_replies = handlers.iter().map(|h| {
        let name = &h.name;
        match &h.returns {
            Returns::Value(t) => {
                let d = decode_probe(t);
                quote! {
                    #name => {
                        if !(#d.decodable() && ok) {
                            return ::core::option::Option::None;
                        }
                        ::core::option::Option::Some(#d.decode(bytes).map(|value: #t| boxed(value)))
                    }
                }
            }
            Returns::Result(t, e) => {
                let (dt, de) = (decode_probe(t), decode_probe(e));
                quote! {
                    #name => {
                        if !(#dt.decodable() && #de.decodable()) {
                            return ::core::option::Option::None;
                        }
                        ::core::option::Option::Some(if ok {
                            #dt.decode(bytes).map(|value: #t| {
                                boxed(::core::result::Result::<#t, #e>::Ok(value))
                            })
                        } else {
                            #de.decode(bytes).map(|error: #e| {
                                boxed(::core::result::Result::<#t, #e>::Err(error))
                            })
                        })
                    }
                }
            }
        }
    });
    let encoded_replies = handlers.iter().map(|h| {
        let name = &h.name;
        match &h.returns {
            Returns::Value(t) => {
                let probe = probe(t);
                quote! {
                    #name => match value.downcast_ref::<#t>() {
                        ::core::option::Option::Some(value) => {
                            ::core::result::Result::Ok(#probe.encode_value(value, encoder))
                        }
                        ::core::option::Option::None => ::core::result::Result::Err(unexpected()),
                    }
                }
            }
            Returns::Result(t, e) => {
                let (probe_t, probe_e) = (probe(t), probe(e));
                quote! {
                    #name => match value.downcast_ref::<::core::result::Result<#t, #e>>() {
                        ::core::option::Option::Some(::core::result::Result::Ok(value)) => {
                            ::core::result::Result::Ok(#probe_t.encode_value(value, encoder))
                        }
                        ::core::option::Option::Some(::core::result::Result::Err(error)) => {
                            ::core::result::Result::Ok(#probe_e.encode_error(error, encoder))
                        }
                        ::core::option::Option::None => ::core::result::Result::Err(unexpected()),
                    }
                }
            }
        }
    });

    // The OpenAPI document's schemas: each type's own where it implements `JsonSchema`
    // (`SchemaProbe`'s autoref specialisation, as for replies), "any value" where not.
    let schema_of =
        |ty: &TokenStream| quote!((&&#private::SchemaProbe::<#ty>::NEW).schema(__gears_sink));
    let state_schema = schema_of(&quote!(Self));
    let handler_schemas = handlers.iter().filter(|h| !h.internal).map(|h| {
        let name = &h.name;
        let doc = doc_text(&h.docs);
        let args = h.args.iter().map(|(n, ty)| {
            let arg = n.to_string();
            let required = !is_option(ty);
            let schema = schema_of(&quote!(#ty));
            quote! {
                let __gears_schema = #schema;
                __gears_sink.argument(#arg, #required, __gears_schema);
            }
        });
        let (result, error) = match &h.returns {
            Returns::Value(t) => (schema_of(&quote!(#t)), None),
            Returns::Result(t, e) => (schema_of(&quote!(#t)), Some(schema_of(&quote!(#e)))),
        };
        let error = error.map(|e| {
            quote! {
                let __gears_schema = #e;
                __gears_sink.error(__gears_schema);
            }
        });
        quote! {
            __gears_sink.handler(#name, #doc);
            #(#args)*
            let __gears_schema = #result;
            __gears_sink.result(__gears_schema);
            #error
        }
    });

    let argument_checks = handlers
        .iter()
        .flat_map(|h| &h.args)
        .map(|(_, ty)| quote_spanned!(ty.span()=> #private::assert_message_argument::<#ty>();));

    quote! {
        // Everything a block generates lives in an anonymous const: only the `Handlers`
        // impl can clash, so a second `#[handlers]` block on the type is one error there
        // (conflicting implementations of `Handlers`). The names users write (`<Type>Handle`,
        // `<Type>Mail`, `<Type>Message`) come once per type from `#[derive(Actor)]`.
        const _: () = {
            fn __gears_check_arguments() {
                #(#argument_checks)*
            }

            #[allow(missing_docs)]
            pub enum #message {
                #(#variants,)*
            }

            impl<D: #private::Deliver<#actor>> #mail<D> {
                #(#mail_methods)*
            }

            impl #handle {
                #(#methods)*
            }

            impl ::gears::Handlers for #actor {
                type Message = #message;
                type Handle = #handle;
                type Mail<D> = #mail<D>;

                fn __handle(caller: #private::Caller<Self>) -> #handle {
                    #handle(caller)
                }

                fn __mail<D>(deliver: D) -> #mail<D> {
                    #mail(deliver)
                }

                fn __event_handler(handler: &str) -> ::core::option::Option<::core::any::TypeId> {
                    match handler {
                        #(#event_handlers,)*
                        _ => ::core::option::Option::None,
                    }
                }

                fn __encode_message(
                    message: &#message,
                ) -> ::core::result::Result<(&'static str, ::std::vec::Vec<u8>), ::std::string::String> {
                    match *message {
                        #(#encodes)*
                    }
                }

                fn __decode_message(
                    handler: &str,
                    args: &[u8],
                ) -> ::core::result::Result<#message, ::std::string::String> {
                    match handler {
                        #(#decodes,)*
                        _ => ::core::result::Result::Err(::std::format!(
                            "`{}` has no handler named `{handler}`",
                            <Self as ::gears::Actor>::NAME
                        )),
                    }
                }

                fn __decode_positional(
                    bytes: &[u8],
                ) -> ::core::result::Result<#message, ::std::string::String> {
                    let (index, args) = #private::split_variant(bytes)?;
                    match index {
                        #(#positional,)*
                        _ => ::core::result::Result::Err(::std::format!(
                            "`{}` has no handler at position {index}",
                            <Self as ::gears::Actor>::NAME
                        )),
                    }
                }

                #[allow(clippy::let_unit_value)]
            fn __schemas(__gears_sink: &mut #private::SchemaSink) {
                #[allow(unused_imports)]
                use #private::{JsonSchemaProbe as _, OpaqueSchemaProbe as _};
                let __gears_schema = #state_schema;
                __gears_sink.state(__gears_schema);
                #(#handler_schemas)*
            }

            fn __handler_infos() -> &'static [::gears::HandlerInfo] {
                    &[#(#infos),*]
                }

                fn __named_message<'__gears_de, D: #private::serde::Deserializer<'__gears_de>>(
                    handler: &str,
                    arguments: D,
                ) -> ::core::result::Result<#message, D::Error> {
                    match handler {
                        #(#named_messages)*
                        _ => ::core::result::Result::Err(
                            <D::Error as #private::serde::de::Error>::custom(::std::format!(
                                "`{}` has no handler `{handler}`",
                                <Self as ::gears::Actor>::NAME
                            )),
                        ),
                    }
                }

                fn __serializable_reply(handler: &str) -> bool {
                    #[allow(unused_imports)]
                    use #private::{OpaqueReply as _, SerializeReply as _};
                    match handler {
                        #(#serializable_replies,)*
                        _ => false,
                    }
                }

                fn __storable_reply(handler: &str) -> bool {
                    #[allow(unused_imports)]
                    use #private::{
                        DeserializeReply as _, OpaqueDecode as _, OpaqueReply as _, SerializeReply as _,
                    };
                    match handler {
                        #(#storable_replies,)*
                        _ => false,
                    }
                }

                fn __decode_reply(
                    handler: &str,
                    ok: bool,
                    bytes: &[u8],
                ) -> ::core::option::Option<
                    ::core::result::Result<
                        ::std::boxed::Box<dyn ::core::any::Any + ::core::marker::Send>,
                        ::std::string::String,
                    >,
                > {
                    #[allow(unused_imports)]
                    use #private::{DeserializeReply as _, OpaqueDecode as _};
                    fn boxed<T: ::core::marker::Send + 'static>(
                        value: T,
                    ) -> ::std::boxed::Box<dyn ::core::any::Any + ::core::marker::Send> {
                        ::std::boxed::Box::new(value)
                    }
                    let _ = (ok, bytes);
                    match handler {
                        #(#decoded_replies,)*
                        _ => ::core::option::Option::None,
                    }
                }

                fn __encode_reply<R: #private::ReplyEncoder>(
                    handler: &str,
                    value: &(dyn ::core::any::Any + ::core::marker::Send),
                    encoder: R,
                ) -> ::core::result::Result<R::Output, ::std::string::String> {
                    #[allow(unused_imports)]
                    use #private::{OpaqueReply as _, SerializeReply as _};
                    let unexpected = || {
                        ::std::format!(
                            "handler `{handler}` of `{}` returned a value of an unexpected type",
                            <Self as ::gears::Actor>::NAME
                        )
                    };
                    match handler {
                        #(#encoded_replies,)*
                        _ => ::core::result::Result::Err(::std::format!(
                            "`{}` has no handler `{handler}`",
                            <Self as ::gears::Actor>::NAME
                        )),
                    }
                }

                fn __describe(message: &#message) -> (&'static str, bool) {
                    match *message {
                        #(#describe,)*
                    }
                }

                fn __dispatch<'a>(
                    &'a mut self,
                    __gears_ctx: &'a ::gears::Context,
                    message: #message,
                ) -> #private::BoxFuture<'a, #private::Output> {
                    let _ = __gears_ctx;
                    ::std::boxed::Box::pin(async move {
                        match message {
                            #(#dispatch,)*
                        }
                    })
                }
            }
        };
    }
}
