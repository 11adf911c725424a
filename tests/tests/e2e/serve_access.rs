//! Who `zu serve` answers, tried as an attacker would with raw requests: a
//! foreign `Host` (DNS rebinding), the token in a URL, wrong tokens by the
//! thousand, a change without the page's Origin and CSRF token; the security
//! headers on every answer; the one-time login link and the session cookie,
//! by hand and in headless Chromium.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use serde_json::{json, Value};
use zu_tests::artifacts;

use super::serve::{Log, Server};

/// An answer read off the wire.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` to `server` with exactly `headers` (plus
/// `Connection: close`) and `body`, and reads the whole answer.
fn raw(server: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let addr = server.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn host(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

fn bearer(server: &Server) -> String {
    format!("Bearer {}", server.token)
}

/// The session cookie the one-time login link sets (`name=value`).
fn log_in_by_hand(server: &Server) -> String {
    let path = &server.login[server.login.find("/login").unwrap()..];
    let a = raw(server, "GET", path, &[("Host", &host(server))], "");
    assert_eq!((a.status, a.header("location")), (303, Some("/")), "{}", a.body);
    let cookie = a.header("set-cookie").unwrap().to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

/// Logs `browser` in through the one-time link; it lands on the runs page.
pub fn log_in(browser: &zu_tests::webdriver::Browser, server: &Server) {
    browser.goto(&server.login);
    browser.wait(
        20,
        "the runs page after login",
        "return location.pathname === '/' && !!document.querySelector('#app')",
    );
}

fn served_log() -> (Log, Server) {
    let log = Log::new("sqlite");
    log.run(json!([{"text": "{\"secret\": \"launch codes\"}"}]), "a private query");
    let server = log.serve(&[], &[]);
    (log, server)
}

#[test]
fn a_request_for_another_host_name_is_refused_whatever_it_carries() {
    let (_log, server) = served_log();
    let port = host(&server).rsplit(':').next().unwrap().to_owned();
    let auth = bearer(&server);
    for name in [
        "attacker.example",
        "localhost.attacker.example",
        "127.0.0.1.nip.io",
        "evil",
    ] {
        let h = format!("{name}:{port}");
        for path in ["/api/runs", "/", "/login", "/assets/app.js", "/healthz", "/api/stream"] {
            let a = raw(&server, "GET", path, &[("Host", &h), ("Authorization", &auth)], "");
            assert_eq!(a.status, 421, "{h}{path}: {}", a.body);
            assert!(
                !a.body.contains("private query") && !a.body.contains("task_id"),
                "{}",
                a.body
            );
        }
    }
    let none = raw(&server, "GET", "/api/runs", &[("Authorization", &auth)], "");
    assert_eq!(none.status, 400, "no Host at all");
    // Its own names are served.
    for h in [host(&server), format!("localhost:{port}"), format!("LOCALHOST:{port}")] {
        let a = raw(
            &server,
            "GET",
            "/api/runs",
            &[("Host", &h), ("Authorization", &auth)],
            "",
        );
        assert_eq!(a.status, 200, "{h}");
        assert!(a.body.contains("a private query"));
    }
    // A name given with --allow-host is served too.
    let log = Log::new("jsonl");
    log.run(json!([{"text": "{}"}]), "q");
    let named = log.serve(&["--allow-host", "zu.internal"], &[]);
    let a = raw(
        &named,
        "GET",
        "/healthz",
        &[("Host", "zu.internal:80"), ("Authorization", &bearer(&named))],
        "",
    );
    assert_eq!(a.status, 200);
}

#[test]
fn every_answer_carries_the_security_headers() {
    let (_log, server) = served_log();
    let h = host(&server);
    let auth = bearer(&server);
    let answers = [
        raw(&server, "GET", "/", &[("Host", &h), ("Authorization", &auth)], ""),
        raw(&server, "GET", "/", &[("Host", &h)], ""),
        raw(&server, "GET", "/login", &[("Host", &h)], ""),
        raw(&server, "GET", "/assets/app.js", &[("Host", &h)], ""),
        raw(&server, "GET", "/api/runs", &[("Host", &h)], ""),
        raw(
            &server,
            "GET",
            "/api/runs",
            &[("Host", &h), ("Authorization", &auth)],
            "",
        ),
        raw(
            &server,
            "GET",
            "/no/such/page",
            &[("Host", &h), ("Authorization", &auth)],
            "",
        ),
        raw(&server, "GET", "/api/runs", &[("Host", "attacker.example")], ""),
        raw(
            &server,
            "POST",
            "/logout",
            &[("Host", &h), ("Origin", "http://attacker.example")],
            "",
        ),
    ];
    for a in &answers {
        let csp = a.header("content-security-policy").unwrap_or_default();
        for part in [
            "default-src 'self'",
            "img-src 'self' data: blob:",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{} lacks {part}: {csp}", a.status);
        }
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"), "{}", a.status);
        assert_eq!(a.header("referrer-policy"), Some("no-referrer"), "{}", a.status);
    }
}

#[test]
fn the_token_never_works_from_a_url_and_wrong_tokens_are_rate_limited() {
    let (_log, server) = served_log();
    let h = host(&server);
    let in_url = format!("/api/runs?token={}", server.token);
    assert_eq!(raw(&server, "GET", &in_url, &[("Host", &h)], "").status, 401);
    let page = raw(
        &server,
        "GET",
        &format!("/?token={}", server.token),
        &[("Host", &h)],
        "",
    );
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login")),
        "a page goes to the login"
    );
    // A browser session taken before the guessing starts.
    let cookie = log_in_by_hand(&server);
    let mut refused = 0;
    let mut answered_401 = 0;
    for i in 0..300 {
        let guess = format!("Bearer guess-{i:04}-{}", "x".repeat(60));
        let a = raw(
            &server,
            "GET",
            "/api/runs",
            &[("Host", &h), ("Authorization", &guess)],
            "",
        );
        match a.status {
            401 => answered_401 += 1,
            429 => {
                refused += 1;
                assert!(a.header("retry-after").is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
            }
            s => panic!("a wrong token got {s}"),
        }
    }
    assert_eq!(
        answered_401, 10,
        "ten wrong tokens are answered, then the address waits"
    );
    assert_eq!(refused, 290);
    // Locked out: even the right token is not looked at from here ...
    let right = raw(
        &server,
        "GET",
        "/api/runs",
        &[("Host", &h), ("Authorization", &bearer(&server))],
        "",
    );
    assert_eq!(right.status, 429);
    // ... but a session made before goes on.
    let a = raw(&server, "GET", "/api/runs", &[("Host", &h), ("Cookie", &cookie)], "");
    assert_eq!(a.status, 200);
    assert!(a.body.contains("a private query"));
}

#[test]
fn the_login_link_works_once_and_a_change_needs_the_origin_and_the_csrf_token() {
    let (_log, server) = served_log();
    let h = host(&server);
    let origin = format!("http://{h}");
    let cookie = log_in_by_hand(&server);
    let path = &server.login[server.login.find("/login").unwrap()..];
    let again = raw(&server, "GET", path, &[("Host", &h)], "");
    assert_eq!(again.status, 401, "the link is spent");
    assert!(again.header("set-cookie").is_none() && again.body.contains("used already"));

    // The pages and the API take the cookie; the page carries no token.
    let page = raw(&server, "GET", "/", &[("Host", &h), ("Cookie", &cookie)], "");
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains(&server.token) && !page.body.contains("token="),
        "{}",
        page.body
    );
    let csrf = page.body.split("name=\"csrf-token\" content=\"").nth(1).unwrap()[..64].to_owned();
    let events = raw(&server, "GET", "/api/runs", &[("Host", &h), ("Cookie", &cookie)], "");
    let runs: Value = serde_json::from_str(&events.body).unwrap();
    assert_eq!(runs["total"], 1);

    // A change (log out) from the cookie alone, a foreign page, or without the token: refused.
    let tries: [&[(&str, &str)]; 4] = [
        &[("Host", &h), ("Cookie", &cookie)],
        &[
            ("Host", &h),
            ("Cookie", &cookie),
            ("Origin", "http://attacker.example"),
            ("X-CSRF-Token", &csrf),
        ],
        &[("Host", &h), ("Cookie", &cookie), ("Origin", &origin)],
        &[
            ("Host", &h),
            ("Cookie", &cookie),
            ("Origin", &origin),
            ("X-CSRF-Token", &"0".repeat(64)),
        ],
    ];
    for t in tries {
        assert_eq!(raw(&server, "POST", "/logout", t, "").status, 403, "{t:?}");
        assert_eq!(
            raw(&server, "GET", "/api/runs", &[("Host", &h), ("Cookie", &cookie)], "").status,
            200
        );
    }
    let out = raw(
        &server,
        "POST",
        "/logout",
        &[
            ("Host", &h),
            ("Cookie", &cookie),
            ("Origin", &origin),
            ("X-CSRF-Token", &csrf),
        ],
        "",
    );
    assert_eq!(out.status, 200);
    assert_eq!(
        raw(&server, "GET", "/api/runs", &[("Host", &h), ("Cookie", &cookie)], "").status,
        401
    );

    // The form: from this server's page only, and only with the token.
    let form = format!("token={}", server.token);
    let form_headers = |o: &'static str| {
        vec![
            ("Host".to_owned(), h.clone()),
            (
                "Content-Type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ),
            (
                "Origin".to_owned(),
                if o.is_empty() { origin.clone() } else { o.to_owned() },
            ),
        ]
    };
    let send = |hs: Vec<(String, String)>, body: &str| {
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        raw(&server, "POST", "/login", &hs, body)
    };
    assert_eq!(send(form_headers("http://attacker.example"), &form).status, 403);
    assert_eq!(send(form_headers(""), "token=wrong").status, 401);
    let ok = send(form_headers(""), &form);
    assert_eq!(ok.status, 303);
    assert!(ok.header("set-cookie").unwrap().contains("HttpOnly"));

    // An API client with the bearer token needs no CSRF token (a page cannot send
    // that header across origins), but a foreign Origin is still refused.
    let auth = bearer(&server);
    let api = raw(
        &server,
        "POST",
        "/logout",
        &[("Host", &h), ("Authorization", &auth)],
        "",
    );
    assert_eq!(api.status, 200);
    let foreign = [
        ("Host", h.as_str()),
        ("Authorization", &auth),
        ("Origin", "http://attacker.example"),
    ];
    assert_eq!(raw(&server, "POST", "/logout", &foreign, "").status, 403);
}

#[test]
fn a_configured_token_is_checked_and_any_address_gets_one() {
    let log = Log::new("sqlite");
    log.run(json!([{"text": "{}"}]), "q");
    let zu = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(&artifacts().zu);
        cmd.arg("serve")
            .arg("--plugins")
            .arg(log.plugins.path())
            .args(["--sink", "sqlite", "--sink-config", &log.config])
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let unset = zu(&["--addr", "127.0.0.1:0", "--token-env", "ZU_NO_SUCH_TOKEN"], &[]);
    assert_eq!(unset.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unset.stderr).contains("ZU_NO_SUCH_TOKEN"));
    let short = zu(&["--addr", "127.0.0.1:0", "--token-env", "T"], &[("T", "abc")]);
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 16"));
    let memory = Command::new(&artifacts().zu)
        .args(["serve", "--sink", "memory"])
        .output()
        .unwrap();
    assert_eq!(memory.status.code(), Some(2));

    // The configured token works as a bearer token; zu serve prints only its variable.
    let server = log.serve(
        &["--token-env", "ZU_SERVE_TOKEN"],
        &[("ZU_SERVE_TOKEN", "a-long-enough-s3cret")],
    );
    assert_eq!(server.token, "a-long-enough-s3cret");
    assert_eq!(server.get("/api/runs")["total"], 1);
    let h = host(&server);
    assert_eq!(
        raw(
            &server,
            "GET",
            "/api/runs",
            &[("Host", &h), ("Authorization", "Bearer a-long-enough")],
            ""
        )
        .status,
        401
    );

    // Any address: a token is made, and the IP literals it is reached by are its names.
    let wide = log.serve(&["--addr", "0.0.0.0:0"], &[]);
    assert_eq!(wide.token.len(), 64);
    let port = host(&wide).rsplit(':').next().unwrap().to_owned();
    let a = raw(
        &wide,
        "GET",
        "/api/runs",
        &[
            ("Host", &format!("127.0.0.1:{port}")),
            ("Authorization", &bearer(&wide)),
        ],
        "",
    );
    assert_eq!(a.status, 200);
    let a = raw(
        &wide,
        "GET",
        "/api/runs",
        &[("Host", "attacker.example"), ("Authorization", &bearer(&wide))],
        "",
    );
    assert_eq!(a.status, 421);
}

#[test]
fn in_a_real_browser_the_login_link_gives_a_cookie_the_page_cannot_read_and_no_url_holds_a_token() {
    let (_log, server) = served_log();
    let browser = zu_tests::webdriver::Browser::start();
    browser.goto(&format!("{}/", server.url));
    browser.wait(
        20,
        "the login page",
        "return location.pathname === '/login' && !!document.querySelector('form')",
    );
    log_in(&browser, &server);
    browser.wait(
        20,
        "the runs table",
        "return document.querySelectorAll('#runs tbody tr').length === 1",
    );
    browser.wait(
        20,
        "the live stream",
        "return document.querySelector('#live').textContent === 'live'",
    );
    assert_eq!(
        browser.eval("return document.cookie"),
        json!(""),
        "HttpOnly: the page cannot read the session"
    );
    assert_eq!(
        browser.eval("return location.search"),
        json!(""),
        "the login code left the address bar"
    );
    let urls = browser.eval(
        "return [...document.querySelectorAll('[href],[src]')].map(e => e.getAttribute('href') || e.getAttribute('src'))",
    );
    let code = server.login.rsplit('=').next().unwrap().to_owned();
    for u in urls.as_array().unwrap() {
        let u = u.as_str().unwrap();
        assert!(
            !u.contains(&server.token) && !u.contains(&code) && !u.contains("token"),
            "{u}"
        );
    }
    // A run's page works with the cookie (its events through the API and the stream).
    browser.eval("document.querySelector('#runs tbody tr a').click(); return null");
    browser.wait(20, "the timeline", "return !!document.querySelector('.final')");
    assert!(
        browser.text(".final").unwrap().contains("launch codes"),
        "full content for the token holder"
    );
    // The spent link logs no one in again; logging out ends the session.
    browser.goto(&server.login);
    browser.wait(
        20,
        "the spent link",
        "return (document.querySelector('#login-message')?.textContent || '').includes('used already')",
    );
    browser.goto(&format!("{}/", server.url));
    browser.wait(
        20,
        "still logged in",
        "return location.pathname === '/' && !!document.querySelector('#logout')",
    );
    browser.eval("document.querySelector('#logout').click(); return null");
    browser.wait(
        20,
        "the login page after logging out",
        "return location.pathname === '/login'",
    );
    browser.goto(&format!("{}/runs/x", server.url));
    browser.wait(20, "logged out", "return location.pathname === '/login'");
    // The form: pasting the token logs in again (the browser sends `Origin: null`
    // under no-referrer; its Sec-Fetch-Site says the form is this server's).
    let fill = format!(
        "document.querySelector('#token').value = {:?}; document.querySelector('form').submit(); return null",
        server.token
    );
    browser.eval(&fill);
    browser.wait(
        20,
        "the runs page after the form",
        "return location.pathname === '/' && !!document.querySelector('#runs tbody tr')",
    );
}

#[test]
fn pages_elsewhere_cannot_spend_tries_or_toss_a_cookie_and_the_form_works_with_origin_null() {
    let (_log, server) = served_log();
    let h = host(&server);
    let auth = bearer(&server);
    // Twelve wrong login codes from another site's page (an <img>, say): refused, not counted.
    for i in 0..12 {
        let path = format!("/login?code=wrong{i}");
        let a = raw(
            &server,
            "GET",
            &path,
            &[("Host", &h), ("Sec-Fetch-Site", "cross-site")],
            "",
        );
        assert_eq!(a.status, 403);
    }
    // Cookies that are no session (set by a page on another port) count for nothing either.
    let port = h.rsplit(':').next().unwrap().to_owned();
    for i in 0..12 {
        let cookie = format!("zu_session_{port}=junk{i}");
        assert_eq!(
            raw(&server, "GET", "/api/runs", &[("Host", &h), ("Cookie", &cookie)], "").status,
            401
        );
    }
    assert_eq!(
        raw(
            &server,
            "GET",
            "/api/runs",
            &[("Host", &h), ("Authorization", &auth)],
            ""
        )
        .status,
        200,
        "not locked out"
    );
    // A junk cookie of the same name before the real one does not hide it.
    let good = log_in_by_hand(&server);
    let name = good.split('=').next().unwrap();
    let both = format!("{name}=junk; {good}");
    assert_eq!(
        raw(&server, "GET", "/api/runs", &[("Host", &h), ("Cookie", &both)], "").status,
        200
    );
    // The form as a browser sends it under no-referrer.
    let form = format!("token={}", server.token);
    let headers = [
        ("Host", h.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    assert_eq!(raw(&server, "POST", "/login", &headers, &form).status, 303);
    let forged = [
        ("Host", h.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", "null"),
    ];
    assert_eq!(
        raw(&server, "POST", "/login", &forged, &form).status,
        403,
        "null without Sec-Fetch-Site"
    );
}
