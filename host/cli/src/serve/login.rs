//! The login: the one-time link printed at start and the token form trade
//! the token for a session cookie (`HttpOnly; SameSite=Strict`); logging
//! out ends the session. Wrong tries count against the client like any.

use std::net::IpAddr;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::access::{fetch_site, refuse, same_origin, too_many, Caller};

/// `GET /login?code=CODE` (the one-time link printed at start) or `POST
/// /login` with the token (the form): a session cookie, then the runs page.
pub async fn login(
    app: &super::App,
    client: IpAddr,
    headers: &HeaderMap,
    code: Option<&str>,
    token: Option<&str>,
) -> Response {
    let access = &app.access;
    if code.is_none() && token.is_none() {
        return login_page(StatusCode::OK, "");
    }
    // A page elsewhere (an <img> to /login?code=...) may not spend tries of
    // this address: a browser says where the request came from.
    if fetch_site(headers).is_some_and(|s| s == "cross-site" || s == "same-site") {
        return refuse(
            StatusCode::FORBIDDEN,
            "a login comes from the link zu serve printed or from this server's own page".into(),
        );
    }
    if let Some(wait) = access.locked_out(client) {
        return too_many(wait);
    }
    if token.is_some() && !same_origin(headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "a login form is sent from this server's own page".into(),
        );
    }
    let good = match (code, token) {
        (Some(c), _) => access.take_code(c),
        (_, Some(t)) => access.is_token(t),
        _ => false,
    };
    if !good {
        access.failed(client);
        let why = if code.is_some() {
            "That login link was used already or is wrong. Paste the token instead."
        } else {
            "That is not the token."
        };
        return login_page(StatusCode::UNAUTHORIZED, why);
    }
    let id = access.open_session();
    let cookie = access.set_cookie(&id);
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, "/".into())],
    )
        .into_response()
}

/// `POST /logout`: the session ends (a state change: Origin and CSRF token).
pub async fn logout(app: &super::App, caller: &Caller) -> Response {
    if let Caller::Session { id, .. } = caller {
        app.access.close_session(id);
    }
    let gone = format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", app.access.cookie);
    (StatusCode::OK, [(header::SET_COOKIE, gone)], Json(json!({"ok": true}))).into_response()
}

fn login_page(status: StatusCode, message: &str) -> Response {
    (status, super::pages::login(message)).into_response()
}
