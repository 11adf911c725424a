//! A small WebDriver client for the browser tests: starts `chromedriver`
//! (Debian's `chromium-driver`) on a free port, opens a headless Chromium
//! session, and offers what the tests need — navigate, read an element's
//! text, wait for a condition, run a script, save a screenshot.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// A browser session; the driver and the browser end with it.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn post(url: &str, body: Value) -> Value {
    match ureq::post(url).send_json(body) {
        Ok(r) => r.into_json().unwrap(),
        Err(ureq::Error::Status(code, r)) => {
            panic!("webdriver {url}: HTTP {code}: {}", r.into_string().unwrap_or_default())
        }
        Err(e) => panic!("webdriver {url}: {e}"),
    }
}

impl Browser {
    /// A headless Chromium (sandbox off when run as root, as Chromium requires).
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/test.sh installs chromium and chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let end = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < end, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("/usr/bin/chromium");
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]}}}});
        let session = post(&format!("{base}/session"), caps)["value"]["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        Browser { driver, base, session }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        post(&self.url("/url"), json!({"url": url}));
    }

    /// Runs `script` (a function body; `return` a value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        post(&self.url("/execute/sync"), json!({"script": script, "args": []}))["value"].clone()
    }

    /// The text of the first element matching `css`, if there is one.
    pub fn text(&self, css: &str) -> Option<String> {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            json!(css)
        );
        self.eval(&script).as_str().map(String::from)
    }

    /// Waits up to `secs` for `script` to return true; panics with `what` otherwise.
    pub fn wait(&self, secs: u64, what: &str, script: &str) {
        let end = Instant::now() + Duration::from_secs(secs);
        while self.eval(script) != Value::Bool(true) {
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; page: {}",
                self.eval("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub fn screenshot(&self, path: &std::path::Path) {
        let png = ureq::get(&self.url("/screenshot"))
            .call()
            .unwrap()
            .into_json::<Value>()
            .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png["value"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&self.url("")).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
