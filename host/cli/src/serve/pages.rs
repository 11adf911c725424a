//! The pages: one HTML shell and one script that draws the runs list, a run
//! as a timeline and two runs compared, from the JSON API, live over
//! server-sent events. Compiled into the binary: no JavaScript toolchain to
//! build, no network to serve.

use axum::extract::RawQuery;
use axum::http::header;
use axum::response::{Html, IntoResponse};

const SHELL: &str = include_str!("pages/shell.html");
const SCRIPT: &str = include_str!("pages/app.js");
const STYLE: &str = include_str!("pages/app.css");

/// The shell, its asset links carrying the request's token (a browser
/// sends none by itself).
fn shell(title: &str, query: Option<String>) -> Html<String> {
    let token = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find(|kv| kv.starts_with("token="))
        .map(|kv| format!("?{kv}"))
        .unwrap_or_default();
    Html(SHELL.replace("{TITLE}", title).replace("{Q}", &token))
}

pub async fn runs(RawQuery(q): RawQuery) -> Html<String> {
    shell("Zu — runs", q)
}

pub async fn run(RawQuery(q): RawQuery) -> Html<String> {
    shell("Zu — run", q)
}

pub async fn compare(RawQuery(q): RawQuery) -> Html<String> {
    shell("Zu — compare", q)
}

pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}

pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}
