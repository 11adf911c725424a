//! What both providers share: their common config keys, and one POST of a
//! JSON body with the provider's headers — 429 and 5xx retried with backoff
//! that honours `Retry-After`, every wait and timeout kept inside the time
//! the run has left — and errors that say what happened and what to do.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use zu_plugin_api::prelude::*;

/// The config keys both providers take.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Common {
    /// The API's base URL (a local server's for Ollama, llama.cpp, vLLM).
    pub base_url: Option<String>,
    /// The model to ask for.
    pub model: String,
    /// The environment variable holding the API key (no key: no auth header).
    pub api_key_env: Option<String>,
    /// Seconds one HTTP attempt may take (the run's deadline caps it too).
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Output tokens at most per turn.
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Retries of a 429 or 5xx answer (or a dropped connection).
    #[serde(default = "default_retries")]
    pub max_retries: u32,
}

fn default_timeout() -> f64 {
    60.0
}

fn default_retries() -> u32 {
    2
}

/// How long one backoff may wait at most when the server names no time.
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// The most of an answer that is read.
const MAX_BODY: u64 = 64 << 20;

/// What a provider's answer parses into: the response and the served model.
pub type Parsed = Result<(ModelResponse, Option<String>), String>;

/// A provider: its connection (none until configured) and the model id the
/// server last said it served.
pub struct Session {
    provider: &'static str,
    client: Option<Client>,
    served: Mutex<Option<String>>,
}

impl Session {
    /// The session of `provider` from its config (`null`: unconfigured).
    pub fn new(
        provider: &'static str,
        config: Value,
        default_base: &str,
        default_key_env: &str,
    ) -> Result<Self, PluginError> {
        Ok(Session {
            provider,
            client: Client::configured(provider, config, default_base, default_key_env)?,
            served: Mutex::new(None),
        })
    }

    /// The model last served, else the one configured.
    pub fn model(&self) -> Option<String> {
        let served = self.served.lock().unwrap_or_else(|p| p.into_inner()).clone();
        served.or_else(|| Some(self.client.as_ref()?.common.model.clone()))
    }

    /// One turn: POST `body(common, request)` to `path` with `headers(client)`, parse the answer.
    pub fn turn(
        &self,
        path: &str,
        headers: impl FnOnce(&Client) -> Vec<(&'static str, String)>,
        body: fn(&Common, &ModelRequest) -> Value,
        request: &ModelRequest,
        parse: fn(&Value) -> Parsed,
    ) -> Result<ModelResponse, PluginError> {
        let c = Client::in_use(&self.client, self.provider)?;
        let answer = c.post(path, &headers(c), &body(&c.common, request), request.time_left_ms)?;
        let (resp, served) = parse(&answer).map_err(|why| c.not_protocol(why.as_str()))?;
        *self.served.lock().unwrap_or_else(|p| p.into_inner()) = served;
        Ok(resp)
    }
}

/// One provider's connection: where, who, how long.
pub struct Client {
    pub provider: &'static str,
    pub common: Common,
    pub base_url: String,
    pub key_env: String,
    pub key: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// Checks the common config of `provider`, reads its key from the environment.
    pub fn new(
        provider: &'static str,
        common: Common,
        default_base: &str,
        default_key_env: &str,
    ) -> Result<Self, PluginError> {
        let bad = |m: String| PluginError::invalid(format!("{provider} provider config: {m}"));
        if common.model.trim().is_empty() {
            return Err(bad("model is empty; name the model to ask for".into()));
        }
        if !(common.timeout_s.is_finite() && common.timeout_s > 0.0) {
            return Err(bad(format!(
                "timeout_s {} must be a positive number of seconds",
                common.timeout_s
            )));
        }
        let base_url = common.base_url.clone().unwrap_or_else(|| default_base.to_owned());
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(bad(format!(
                "base_url {base_url:?} must start with http:// or https://"
            )));
        }
        let key_env = common.api_key_env.clone().unwrap_or_else(|| default_key_env.to_owned());
        let key = std::env::var(&key_env).ok().filter(|k| !k.is_empty());
        Ok(Client {
            provider,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key_env,
            key,
            common,
            agent: ureq::AgentBuilder::new().redirects(0).build(),
        })
    }

    /// The client of `provider` from its `config`: `None` for no config (the
    /// provider loads, and says what to do when it is used).
    pub fn configured(
        provider: &'static str,
        config: Value,
        default_base: &str,
        default_key_env: &str,
    ) -> Result<Option<Self>, PluginError> {
        if config.is_null() {
            return Ok(None);
        }
        let common: Common = serde_json::from_value(config)
            .map_err(|e| PluginError::invalid(format!("{provider} provider config: {e}")))?;
        Client::new(provider, common, default_base, default_key_env).map(Some)
    }

    /// The configured client, or the error saying how to configure it.
    pub fn in_use<'a>(client: &'a Option<Client>, provider: &str) -> Result<&'a Client, PluginError> {
        client.as_ref().ok_or_else(|| {
            PluginError::failed(format!(
                "the {provider} provider has no config: give it at least {{\"model\": ...}} (and base_url for a local server) with --provider-config or [provider] config in zu.toml"
            ))
        })
    }

    /// POSTs `body` to `path` with `headers` and returns the answer's JSON.
    pub fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: &Value,
        time_left_ms: Option<u64>,
    ) -> Result<Value, PluginError> {
        let url = format!("{}{path}", self.base_url);
        let body = body.to_string();
        let start = Instant::now();
        let budget = time_left_ms.map_or(Duration::from_secs(24 * 3600), Duration::from_millis);
        let deadline = start + budget;
        let mut attempt = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.fail(format!("the run's deadline passed before {url} answered")));
            }
            let timeout = left.min(Duration::from_secs_f64(self.common.timeout_s));
            let mut request = self
                .agent
                .post(&url)
                .timeout(timeout)
                .set("content-type", "application/json");
            for (k, v) in headers
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .chain(self.common.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            {
                request = request.set(k, v);
            }
            let (retry, why) = match request.send_string(&body) {
                Ok(resp) => return self.json_of(resp, &url),
                Err(ureq::Error::Status(code, resp)) => {
                    let wait = retry_after(&resp);
                    let message = error_message(resp);
                    if code == 429 || code >= 500 {
                        (wait, format!("HTTP {code}: {message}"))
                    } else {
                        return Err(self.refused(code, &message));
                    }
                }
                Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::Io && timed_out(&t) => {
                    let what = if timeout < Duration::from_secs_f64(self.common.timeout_s) {
                        "the run's deadline"
                    } else {
                        "timeout_s"
                    };
                    return Err(self.fail(format!(
                        "{url} did not answer within {:.1} s ({what})",
                        timeout.as_secs_f64()
                    )));
                }
                Err(ureq::Error::Transport(t)) => {
                    // In zu's sandbox, a host it was not granted: no retry helps.
                    let denied = t
                        .url()
                        .and_then(|u| PluginError::net_denied(u.host_str()?, u.port_or_known_default()?));
                    if let Some(denied) = denied {
                        return Err(denied);
                    }
                    (None, format!("cannot reach {url}: {t}"))
                }
            };
            let wait =
                retry.unwrap_or_else(|| (Duration::from_millis(500) * 2u32.saturating_pow(attempt)).min(MAX_BACKOFF));
            if attempt >= self.common.max_retries || Instant::now() + wait >= deadline {
                let tries = attempt + 1;
                return Err(self.fail(format!(
                    "{why} (gave up after {tries} attempt(s); raise max_retries or try later)"
                )));
            }
            say_retry(self.provider, &why, wait);
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    fn json_of(&self, resp: ureq::Response, url: &str) -> Result<Value, PluginError> {
        use std::io::Read;
        let mut text = String::new();
        resp.into_reader()
            .take(MAX_BODY)
            .read_to_string(&mut text)
            .map_err(|e| self.fail(format!("reading the answer of {url}: {e}")))?;
        serde_json::from_str(&text).map_err(|e| self.not_protocol(&format!("not JSON ({e}): {}", excerpt(&text))))
    }

    /// A failure of this provider, named.
    pub fn fail(&self, message: String) -> PluginError {
        PluginError::failed(format!("{}: {message}", self.provider))
    }

    /// An answer that is not the provider's protocol.
    pub fn not_protocol(&self, what: &str) -> PluginError {
        self.fail(format!(
            "the answer is not the {} protocol ({what}); is base_url {} the right endpoint?",
            self.provider, self.base_url
        ))
    }

    fn refused(&self, code: u16, message: &str) -> PluginError {
        let hint = match code {
            401 | 403 => match &self.key {
                Some(_) => format!("the key in ${} was refused; set it to a valid key", self.key_env),
                None => format!(
                    "no key was sent: set ${} (or api_key_env) to your API key",
                    self.key_env
                ),
            },
            404 => format!("check model ({:?}) and base_url ({})", self.common.model, self.base_url),
            400 | 422 => "the server rejected the request; check max_tokens, temperature and the model's limits".into(),
            _ => "see the server's message".into(),
        };
        self.fail(format!("HTTP {code}: {message}; {hint}"))
    }
}

fn timed_out(t: &ureq::Transport) -> bool {
    let text = t.to_string().to_lowercase();
    text.contains("timed out") || text.contains("timeout") || text.contains("would block")
}

/// The largest token count one answer may report.
const MAX_TOKEN_COUNT: u64 = u32::MAX as u64;

/// An answer's `usage` under Zu's names: each `(wire, zu)` field present
/// must be a non-negative integer that fits ([`MAX_TOKEN_COUNT`]); anything
/// else is named, so a hostile or broken server cannot inflate a budget.
pub fn usage_of(usage: &Value, names: &[(&str, &str)]) -> Result<JsonObject, String> {
    let mut out = JsonObject::new();
    for (wire, zu) in names {
        match usage.get(*wire) {
            None | Some(Value::Null) => {}
            Some(n) if n.as_u64().is_some_and(|n| n <= MAX_TOKEN_COUNT) => {
                out.insert((*zu).into(), n.clone());
            }
            Some(n) => {
                return Err(format!(
                    "usage.{wire} is {}, not a token count (an integer from 0 to {MAX_TOKEN_COUNT})",
                    excerpt(&n.to_string())
                ))
            }
        }
    }
    Ok(out)
}

/// The longest wait a server's `Retry-After` may ask for; longer asks wait
/// this long (and give up at once when the run's deadline comes first).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `retry-after-ms` or `Retry-After` (seconds), if the server said something
/// usable: a finite, non-negative number (an HTTP date, NaN, `inf` or text
/// is no value), capped at [`MAX_RETRY_AFTER`].
fn retry_after(resp: &ureq::Response) -> Option<Duration> {
    let ms = resp.header("retry-after-ms").and_then(|v| wait_of(v, 1000.0));
    ms.or_else(|| resp.header("retry-after").and_then(|v| wait_of(v, 1.0)))
}

/// `text` as a wait in units of `1/per_second` s, if it is one.
fn wait_of(text: &str, per_second: f64) -> Option<Duration> {
    let n = text.trim().parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0)?;
    Some(Duration::from_secs_f64(
        (n / per_second).min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// The server's error message (`{"error": {"message"}}` in both APIs), else the body.
fn error_message(resp: ureq::Response) -> String {
    let text = resp.into_string().unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => v["error"]["message"]
            .as_str()
            .or_else(|| v["error"].as_str())
            .or_else(|| v["message"].as_str())
            .map_or_else(|| excerpt(&text), str::to_owned),
        Err(_) => excerpt(&text),
    }
}

fn excerpt(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    if t.len() < text.len() {
        format!("{t}…")
    } else {
        t
    }
}

/// Plugins have no logger of the host's; a retry is said on stderr.
fn say_retry(provider: &str, why: &str, wait: Duration) {
    eprintln!("zu {provider} provider: {why}; retrying in {:.1} s", wait.as_secs_f64());
}

/// A Zu tool call of the history (`{"name", "args"}`) as the id it goes to
/// the model with (the call's own, kept as the model gave it, else
/// `fallback`) and its arguments as an object, without the id.
pub fn id_and_args(call: &Value, fallback: impl FnOnce() -> String) -> (String, Value) {
    let mut args = call.get("args").and_then(Value::as_object).cloned().unwrap_or_default();
    let id = match args.remove(zu_plugin_api::ports::CALL_ID) {
        Some(Value::String(id)) if !id.is_empty() => wire_id(&id),
        _ => fallback(),
    };
    (id, Value::Object(args))
}

/// The id a tool message's result goes back under: the one the message
/// carries (as it goes on the wire), else the call's it answers in order
/// (`queued`), else `fallback`.
pub fn result_id(msg: &Value, queued: Option<String>, fallback: impl FnOnce() -> String) -> String {
    msg["call_id"]
        .as_str()
        .filter(|i| !i.is_empty())
        .map(wire_id)
        .or(queued)
        .unwrap_or_else(fallback)
}

/// A call id as it goes on the wire: unchanged when it is made of letters,
/// digits, `_` and `-` and at most 64 long (what the APIs accept), else the
/// same id made so (the call and its result always agree).
pub fn wire_id(id: &str) -> String {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if id.len() <= 64 && id.chars().all(ok) {
        return id.to_owned();
    }
    id.chars().map(|c| if ok(c) { c } else { '_' }).take(64).collect()
}

/// A model's arguments with zu's reserved key taken out: a model cannot
/// give its call an id by writing one in its arguments.
pub fn model_args(mut args: zu_plugin_api::prelude::JsonObject) -> zu_plugin_api::prelude::JsonObject {
    args.remove(zu_plugin_api::ports::CALL_ID);
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_call_id_goes_on_the_wire_as_the_apis_take_it_and_a_model_cannot_set_one() {
        assert_eq!(wire_id("call_abc-1"), "call_abc-1", "unchanged when fine");
        assert_eq!(wire_id("functions.x:0"), "functions_x_0");
        assert_eq!(wire_id(&"a".repeat(100)).len(), 64);
        let call = json!({"name": "t", "args": {"$zu_call_id": "", "x": 1}});
        assert_eq!(
            id_and_args(&call, || "fallback".into()),
            ("fallback".to_owned(), json!({"x": 1}))
        );
        let spoofed = json!({"$zu_call_id": "chosen", "x": 1}).as_object().cloned().unwrap();
        assert_eq!(Value::Object(model_args(spoofed)), json!({"x": 1}));
    }

    #[test]
    fn usage_counts_are_integers_that_fit_and_a_bad_one_is_named() {
        let names = [("prompt_tokens", "input_tokens")];
        assert_eq!(
            usage_of(&json!({"prompt_tokens": 7}), &names).unwrap()["input_tokens"],
            7
        );
        assert!(usage_of(&json!({}), &names).unwrap().is_empty());
        for bad in [json!(1e300), json!(-3), json!(1.5), json!("7"), json!(u64::MAX)] {
            let e = usage_of(&json!({ "prompt_tokens": bad }), &names).unwrap_err();
            assert!(e.starts_with("usage.prompt_tokens is "), "{e}");
        }
    }

    #[test]
    fn a_wait_is_a_finite_non_negative_number_and_capped() {
        assert_eq!(wait_of(" 1500 ", 1000.0), Some(Duration::from_millis(1500)));
        assert_eq!(wait_of("2", 1.0), Some(Duration::from_secs(2)));
        assert_eq!(wait_of("1e300", 1000.0), Some(MAX_RETRY_AFTER));
        assert_eq!(wait_of("1e300", 1.0), Some(MAX_RETRY_AFTER));
        for bad in [
            "NaN",
            "nan",
            "inf",
            "-inf",
            "infinity",
            "-1",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "",
        ] {
            assert_eq!(wait_of(bad, 1000.0), None, "{bad}");
        }
    }
}
