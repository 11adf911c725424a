//! The pages: one HTML shell and one script that draws the runs list, a run
//! as a timeline and two runs compared, from the JSON API, live over
//! server-sent events; and the login page. Compiled into the binary: no
//! JavaScript toolchain to build, no network to serve.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::Extension;

use super::access::Caller;

const SHELL: &str = include_str!("pages/shell.html");
const LOGIN: &str = include_str!("pages/login.html");
const SCRIPT: &str = include_str!("pages/app.js");
const STYLE: &str = include_str!("pages/app.css");

/// The shell, carrying the session's CSRF token for the changes a page
/// makes (no token of any kind goes into a URL).
fn shell(title: &str, caller: &Caller) -> Html<String> {
    let csrf = match caller {
        Caller::Session { csrf, .. } => csrf.as_str(),
        Caller::Bearer => "",
    };
    Html(SHELL.replace("{TITLE}", title).replace("{CSRF}", csrf))
}

pub async fn runs(Extension(caller): Extension<Caller>) -> Html<String> {
    shell("Zu — runs", &caller)
}

pub async fn run(Extension(caller): Extension<Caller>) -> Html<String> {
    shell("Zu — run", &caller)
}

pub async fn compare(Extension(caller): Extension<Caller>) -> Html<String> {
    shell("Zu — compare", &caller)
}

/// The login page, with `message` (one of the server's own sentences).
pub fn login(message: &str) -> Html<String> {
    Html(LOGIN.replace("{MESSAGE}", message))
}

pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}

pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}
