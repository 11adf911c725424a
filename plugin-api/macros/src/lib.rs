//! `#[tool]`: a plain function becomes a registered Zu tool. Re-exported by
//! `zu-plugin-api` as `zu_plugin_api::tool`; see its documentation there.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, LitStr, Meta, Token};

/// Turns `fn NAME(args: JsonObject) -> Result<Value, PluginError>` (or
/// `fn NAME(ctx: &dyn RunContext, args: JsonObject) -> ...`; `Result<JsonObject, _>`
/// works too) into a tool
/// plugin type of the same name, to list in `export_plugins! { tools: [NAME] }`.
///
/// Arguments, all optional: `name = "..."` (default: the function's name),
/// `tier = N` (default 1), `capabilities = ["fs:read", ...]`,
/// `egress = ["example.com", ...]`, `description = "..."` (default: the doc
/// comment), `parameters = r#"{JSON Schema}"#` (default: any object).
#[proc_macro_attribute]
pub fn tool(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(out) => out.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Settings {
    name: Option<LitStr>,
    tier: u32,
    capabilities: Vec<LitStr>,
    egress: Vec<LitStr>,
    description: Option<String>,
    parameters: Option<LitStr>,
}

fn strings(expr: &Expr, key: &str) -> syn::Result<Vec<LitStr>> {
    let Expr::Array(array) = expr else {
        return Err(syn::Error::new_spanned(
            expr,
            format!("`{key}` takes a list of strings, e.g. {key} = [\"...\"]"),
        ));
    };
    array
        .elems
        .iter()
        .map(|e| match e {
            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s.clone()),
            other => Err(syn::Error::new_spanned(other, format!("`{key}` entries are strings"))),
        })
        .collect()
}

fn string(expr: &Expr, key: &str) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s.clone()),
        other => Err(syn::Error::new_spanned(other, format!("`{key}` takes a string"))),
    }
}

fn settings(attr: TokenStream2) -> syn::Result<Settings> {
    let mut out = Settings {
        name: None,
        tier: 1,
        capabilities: Vec::new(),
        egress: Vec::new(),
        description: None,
        parameters: None,
    };
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    for meta in metas {
        let Meta::NameValue(nv) = &meta else {
            return Err(syn::Error::new_spanned(meta, "expected `key = value`"));
        };
        let key = nv.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        match key.as_str() {
            "name" => out.name = Some(string(&nv.value, "name")?),
            "tier" => match &nv.value {
                Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => out.tier = i.base10_parse()?,
                other => return Err(syn::Error::new_spanned(other, "`tier` takes a number, e.g. tier = 1")),
            },
            "capabilities" => out.capabilities = strings(&nv.value, "capabilities")?,
            "egress" => out.egress = strings(&nv.value, "egress")?,
            "description" => out.description = Some(string(&nv.value, "description")?.value()),
            "parameters" => {
                let text = string(&nv.value, "parameters")?;
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&text.value()) {
                    return Err(syn::Error::new_spanned(
                        &text,
                        format!("`parameters` is not valid JSON: {e}"),
                    ));
                }
                out.parameters = Some(text);
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    &nv.path,
                    "unknown #[tool] argument; expected name, tier, capabilities, egress, description or parameters",
                ))
            }
        }
    }
    Ok(out)
}

fn doc_comment(f: &ItemFn) -> String {
    let lines: Vec<String> = f
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    lines.join(" ").trim().to_owned()
}

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let settings = settings(attr)?;
    let f: ItemFn = syn::parse2(item)?;
    let ident = &f.sig.ident;
    let vis = &f.vis;
    let takes_ctx = match f.sig.inputs.len() {
        1 => false,
        2 => true,
        _ => {
            return Err(syn::Error::new_spanned(
                &f.sig.inputs,
                "a #[tool] function takes `args: JsonObject`, or `ctx: &dyn RunContext, args: JsonObject`",
            ))
        }
    };
    if let Some(FnArg::Receiver(r)) = f.sig.inputs.first() {
        return Err(syn::Error::new_spanned(
            r,
            "#[tool] goes on a free function, not a method",
        ));
    }
    let name = settings
        .name
        .unwrap_or_else(|| LitStr::new(&ident.to_string(), Span::call_site()));
    let description = settings.description.unwrap_or_else(|| doc_comment(&f));
    let parameters = settings
        .parameters
        .map(|p| quote!(::zu_plugin_api::serde_json::from_str::<::zu_plugin_api::serde_json::Value>(#p).expect("checked when the tool was compiled")))
        .unwrap_or_else(|| quote!(::zu_plugin_api::serde_json::json!({"type": "object"})));
    let tier = settings.tier;
    let capabilities = settings.capabilities;
    let egress = settings.egress;
    let call = if takes_ctx {
        quote!(#ident(ctx, args))
    } else {
        quote!({
            let _ = ctx;
            #ident(args)
        })
    };
    let call = quote!(::zu_plugin_api::ports::IntoObservation::into_observation(#call));
    Ok(quote! {
        #f

        #[doc = concat!("The `", #name, "` tool, made by `#[tool]` from the function of the same name.")]
        #[allow(non_camel_case_types)]
        #vis struct #ident {}

        impl ::zu_plugin_api::ports::Plugin for #ident {
            const NAME: &'static str = #name;
            const ENVELOPE: ::zu_plugin_api::ports::Envelope = ::zu_plugin_api::ports::Envelope {
                tier: #tier,
                capabilities: &[#(#capabilities),*],
                egress: &[#(#egress),*],
            };
            fn new(_config: ::zu_plugin_api::serde_json::Value) -> ::core::result::Result<Self, ::zu_plugin_api::PluginError> {
                ::core::result::Result::Ok(#ident {})
            }
        }

        impl ::zu_plugin_api::ports::Tool for #ident {
            fn schema(&self) -> ::zu_plugin_api::serde_json::Value {
                ::zu_plugin_api::serde_json::json!({
                    "name": #name,
                    "description": #description,
                    "parameters": #parameters,
                })
            }
            fn prompt_fragment(&self) -> ::std::string::String {
                if #description.is_empty() {
                    ::std::string::String::from(#name)
                } else {
                    ::std::format!("{}: {}", #name, #description)
                }
            }
            fn call(
                &self,
                ctx: &dyn ::zu_plugin_api::ports::RunContext,
                args: ::zu_plugin_api::contracts::JsonObject,
            ) -> ::core::result::Result<::zu_plugin_api::contracts::JsonObject, ::zu_plugin_api::PluginError> {
                #call
            }
        }
    })
}
