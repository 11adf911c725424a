//! Who `zu serve` answers: requests addressed to one of its own host names
//! (a DNS-rebinding page is refused), carrying the token as a bearer header
//! or the session cookie a login sets; wrong credentials are rate-limited
//! per client; a state change needs the server's own `Origin` and the
//! session's CSRF token; every answer carries the security headers.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::AppState;

/// Wrong credentials one client may send within [`WINDOW`] before it is
/// refused (429) until the oldest of them is that old.
pub const MAX_FAILURES: usize = 10;
/// The window [`MAX_FAILURES`] counts over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Clients whose failures are remembered at once (the oldest go first).
const MAX_CLIENTS: usize = 4096;
/// Sessions kept at once (the oldest go first).
const MAX_SESSIONS: usize = 1024;
/// The header a page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The headers on every answer: nothing from elsewhere runs, loads or frames
/// the pages; types are not sniffed; no URL leaves in a referrer.
const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cache-control", "no-store"),
];

/// A logged-in browser.
struct Session {
    csrf: String,
    since: Instant,
}

/// The token, the host names served, the one-time login code, the sessions
/// and each client's recent failures.
pub struct Access {
    token: String,
    hosts: Vec<String>,
    /// Any IP literal is a name of this server (`--addr` is unspecified).
    any_ip: bool,
    /// The cookie's name (per port: cookies are not kept apart by port).
    pub cookie: String,
    login_code: Mutex<Option<String>>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// 32 random bytes as hex, from the operating system's generator.
pub fn secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `a == b` in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The host part of a `Host` header (`name`, `name:port`, `[v6]:port`),
/// lowercased, without a trailing dot.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok())) {
            return None;
        }
        inside
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.parse::<u16>().is_ok() => name,
            Some(_) => return None,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

impl Access {
    /// For a server listening on `addr`, also known as `names`.
    pub fn new(token: String, addr: SocketAddr, names: &[String]) -> Access {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
        if !addr.ip().is_unspecified() {
            hosts.push(addr.ip().to_string());
        }
        hosts.extend(names.iter().filter_map(|n| host_name(n)));
        Access {
            token,
            hosts,
            any_ip: addr.ip().is_unspecified(),
            cookie: format!("zu_session_{}", addr.port()),
            login_code: Mutex::new(Some(secret())),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The token (printed at start when zu serve made it).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The one-time login code printed at start.
    pub fn login_code(&self) -> String {
        lock(&self.login_code).clone().unwrap_or_default()
    }

    /// Whether `Host` names this server.
    fn serves(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else { return false };
        self.hosts.contains(&name) || (self.any_ip && name.parse::<IpAddr>().is_ok())
    }

    /// A client that sent too many wrong credentials: how long until it may try again.
    pub(super) fn locked_out(&self, client: IpAddr) -> Option<Duration> {
        let mut failures = lock(&self.failures);
        let seen = failures.get_mut(&client)?;
        let now = Instant::now();
        while seen.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            seen.pop_front();
        }
        if seen.len() < MAX_FAILURES {
            return None;
        }
        seen.front().map(|t| WINDOW.saturating_sub(now.duration_since(*t)))
    }

    /// Counts a wrong credential from `client`.
    pub(super) fn failed(&self, client: IpAddr) {
        let mut failures = lock(&self.failures);
        let now = Instant::now();
        if failures.len() >= MAX_CLIENTS && !failures.contains_key(&client) {
            failures.retain(|_, seen| seen.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            if failures.len() >= MAX_CLIENTS {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, s)| s.back().copied())
                    .map(|(ip, _)| *ip);
                if let Some(ip) = oldest {
                    failures.remove(&ip);
                }
            }
        }
        let seen = failures.entry(client).or_default();
        seen.push_back(now);
        while seen.len() > MAX_FAILURES {
            seen.pop_front();
        }
        tracing::warn!(%client, failures = seen.len(), "zu serve: a wrong token or session");
    }

    /// Whether `given` is the token.
    pub fn is_token(&self, given: &str) -> bool {
        same(given, &self.token)
    }

    /// Spends the one-time login code if `given` is it.
    pub(super) fn take_code(&self, given: &str) -> bool {
        let mut code = lock(&self.login_code);
        if code.as_deref().is_some_and(|c| same(given, c)) {
            *code = None;
            return true;
        }
        false
    }

    /// A new session: its id (the cookie's value).
    pub(super) fn open_session(&self) -> String {
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.since).map(|(id, _)| id.clone()) {
                sessions.remove(&oldest);
            }
        }
        let id = secret();
        sessions.insert(
            id.clone(),
            Session {
                csrf: secret(),
                since: Instant::now(),
            },
        );
        id
    }

    /// The CSRF token of session `id`, if it is one.
    fn session_csrf(&self, id: &str) -> Option<String> {
        // Ids are compared through the map's hash, which reveals nothing of the
        // id itself: 256 random bits cannot be found by timing a lookup.
        lock(&self.sessions).get(id).map(|s| s.csrf.clone())
    }

    pub(super) fn close_session(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }

    /// The `Set-Cookie` value logging in with session `id`.
    pub(super) fn set_cookie(&self, id: &str) -> String {
        format!("{}={id}; HttpOnly; SameSite=Strict; Path=/", self.cookie)
    }

    /// The session cookie's value in `headers`, if sent.
    /// Every value of the session cookie in `headers` (another page on this
    /// host, on another port, may have set one of the same name).
    fn cookies_of(&self, headers: &HeaderMap) -> Vec<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .filter(|(k, _)| *k == self.cookie)
            .map(|(_, v)| v.to_owned())
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Who a request is, once let in.
#[derive(Clone)]
pub enum Caller {
    /// An API client with the bearer token.
    Bearer,
    /// A browser with a session (its CSRF token).
    Session { id: String, csrf: String },
}

pub(super) fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// Whether a request changes state (anything but reading).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether `Origin` is this request's own (`http(s)://` + its `Host`).
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    // With `Referrer-Policy: no-referrer` a browser sends a form's Origin as
    // `null`; its `Sec-Fetch-Site` (which no page can set) still says where
    // the request comes from.
    if origin.is_none_or(|o| o == "null") {
        return fetch_site(headers) == Some("same-origin");
    }
    match (host, origin) {
        (Some(host), Some(origin)) => {
            let origin = origin.to_ascii_lowercase();
            let host = host.to_ascii_lowercase();
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        _ => false,
    }
}

/// What a browser says of a request's origin relative to this server
/// (`same-origin`, `same-site`, `cross-site`, `none`), if it says.
pub(super) fn fetch_site(headers: &HeaderMap) -> Option<&str> {
    headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
}

/// The security headers, on every answer (the refusals too).
pub async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (k, v) in SECURITY_HEADERS {
        h.insert(k, HeaderValue::from_static(v));
    }
    resp
}

/// Only requests for this server's own names (`Host`), from anywhere.
pub async fn host_rule(State(app): AppState, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if app.access.serves(&h) => next.run(req).await,
        Some(h) => refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer to the host name {:?}; if it is this machine's, start zu serve with --allow-host NAME (or [serve] allow_hosts in zu.toml)",
                h.chars().take(100).collect::<String>()
            ),
        ),
        None => refuse(StatusCode::BAD_REQUEST, "a request needs a Host header".into()),
    }
}

/// The client's address (behind the listener's connect info).
fn client_of(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// The token rule: a session cookie, or a bearer header with the token; a
/// page without either goes to the login page, anything else is 401. Wrong
/// credentials count against the client; past [`MAX_FAILURES`] in
/// [`WINDOW`] its tokens are not even looked at (429). A state change needs
/// this server's `Origin`, and from a session its CSRF token.
pub async fn token_rule(State(app): AppState, mut req: Request, next: Next) -> Response {
    let access = &app.access;
    let client = client_of(&req);
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    // A live session is let in even while its address is locked out: its id
    // cannot be guessed, and other clients' guesses must not log it out. A
    // cookie that is no session counts for nothing (any page of this host
    // can set one); only wrong tokens count against the address.
    let session = access
        .cookies_of(req.headers())
        .into_iter()
        .find_map(|id| access.session_csrf(&id).map(|csrf| Caller::Session { id, csrf }));
    let caller = match (session, &bearer) {
        (Some(session), _) => session,
        (None, None) => return unauthorized(&req),
        (None, Some(bearer)) => {
            if let Some(wait) = access.locked_out(client) {
                return too_many(wait);
            }
            if !access.is_token(bearer) {
                access.failed(client);
                return unauthorized(&req);
            }
            Caller::Bearer
        }
    };
    if changes_state(req.method()) {
        let origin_sent = req.headers().contains_key(header::ORIGIN);
        let from_here = same_origin(req.headers());
        let csrf_ok = match &caller {
            Caller::Bearer => !origin_sent || from_here,
            Caller::Session { csrf, .. } => {
                from_here
                    && req
                        .headers()
                        .get(CSRF_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|given| same(given, csrf))
            }
        };
        if !csrf_ok {
            return refuse(
                StatusCode::FORBIDDEN,
                "a change needs this server's Origin and, from a browser, the page's CSRF token (the x-csrf-token header)"
                    .into(),
            );
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

pub(super) fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut resp = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many wrong tokens from this address; try again in {secs} s"),
    );
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// A page goes to the login page; the API answers 401.
fn unauthorized(req: &Request) -> Response {
    let path = req.uri().path();
    if req.method() == Method::GET && !path.starts_with("/api/") && path != "/healthz" {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
    }
    let body = Json(json!({"error": "unauthorized: send Authorization: Bearer <token>, or log in at /login"}));
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_read_with_or_without_a_port() {
        assert_eq!(host_name("LocalHost:7788").as_deref(), Some("localhost"));
        assert_eq!(host_name("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host_name("example.org.").as_deref(), Some("example.org"));
        assert_eq!(host_name("a:b"), None);
        assert_eq!(host_name("[::1]x"), None);
        assert_eq!(host_name(""), None);
    }

    #[test]
    fn only_the_loopback_names_the_address_and_the_named_hosts_are_served() {
        let a = Access::new("t".into(), "127.0.0.1:7788".parse().unwrap(), &["zu.lan".into()]);
        for ok in ["localhost:7788", "127.0.0.1", "[::1]:7788", "ZU.lan:7788"] {
            assert!(a.serves(ok), "{ok}");
        }
        for no in [
            "attacker.example:7788",
            "localhost.attacker.example",
            "10.0.0.1",
            "",
            "zu.lan:x",
        ] {
            assert!(!a.serves(no), "{no}");
        }
        let any = Access::new("t".into(), "0.0.0.0:7788".parse().unwrap(), &[]);
        assert!(any.serves("192.168.1.5:7788") && !any.serves("attacker.example"));
    }

    #[test]
    fn failures_lock_a_client_out_for_the_window_and_others_not() {
        let a = Access::new("t".into(), "127.0.0.1:1".parse().unwrap(), &[]);
        let (bad, good): (IpAddr, IpAddr) = ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        for _ in 0..MAX_FAILURES - 1 {
            a.failed(bad);
        }
        assert!(a.locked_out(bad).is_none());
        a.failed(bad);
        let wait = a.locked_out(bad).unwrap();
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        assert!(a.locked_out(good).is_none());
    }

    #[test]
    fn the_login_code_works_once() {
        let a = Access::new("t".into(), "127.0.0.1:1".parse().unwrap(), &[]);
        let code = a.login_code();
        assert_eq!(code.len(), 64);
        assert!(!a.take_code("nope"));
        assert!(a.take_code(&code));
        assert!(!a.take_code(&code));
    }
}
