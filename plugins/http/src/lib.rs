//! The `http_fetch` tool (tier 1, `net`, open egress): a blocking HTTP GET
//! with a timeout and a body cap, returning `{status, url, content_type, text}`.
//! An SSRF guard refuses loopback, private, link-local, metadata and other
//! non-global addresses, after DNS resolution and on every redirect, with a
//! security block; the connection is pinned to the addresses it checked.
//!
//! Config: `{"allow_hosts": ["127.0.0.1"], "allow_private": false,
//! "timeout_s": 20, "max_bytes": 5000000, "max_redirects": 5}`. Hosts in
//! `allow_hosts` (names or IPs) skip the address check; `allow_private`
//! (or `ZU_HTTP_ALLOW_PRIVATE=1`) skips it for every host.

#![forbid(unsafe_code)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::Deserialize;
use zu_plugin_api::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow_hosts: Vec<String>,
    #[serde(default)]
    allow_private: bool,
    #[serde(default = "default_timeout")]
    timeout_s: u64,
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
    #[serde(default = "default_redirects")]
    max_redirects: u32,
}

fn default_timeout() -> u64 {
    20
}
fn default_max_bytes() -> u64 {
    5_000_000
}
fn default_redirects() -> u32 {
    5
}

/// The http_fetch tool.
pub struct HttpFetch {
    guard: Guard,
    agent: ureq::Agent,
    max_bytes: u64,
    max_redirects: u32,
}

/// Which addresses may be reached.
#[derive(Clone)]
struct Guard {
    allow_hosts: Vec<String>,
    allow_private: bool,
}

/// Why an address is not globally routable, or `None` if it is.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => {
            if let Some(inner) = v6.to_ipv4_mapped() {
                return v4_reason(inner);
            }
            let seg = v6.segments();
            if seg[0] == 0x2002 {
                // 6to4 embeds an IPv4 address in the next 32 bits.
                return v4_reason(Ipv4Addr::new(
                    (seg[1] >> 8) as u8,
                    seg[1] as u8,
                    (seg[2] >> 8) as u8,
                    seg[2] as u8,
                ));
            }
            v6_reason(v6)
        }
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local (incl. cloud metadata 169.254.169.254)")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || o[0] >= 240 {
        Some("reserved")
    } else if (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || ip.is_documentation()
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    {
        Some("non-global")
    } else {
        None
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if (seg[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if (seg[0] & 0xfe00) == 0xfc00 {
        Some("private (unique local)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if (seg[0] & 0xe000) != 0x2000 || (seg[0] == 0x2001 && seg[1] == 0x0db8) || seg[0] == 0x0064 {
        Some("non-global")
    } else {
        None
    }
}

fn block(kind: &str, target: Option<String>, message: String) -> PluginError {
    PluginError::security_block(kind, target, message)
}

impl Guard {
    fn host_allowed(&self, host: &str) -> bool {
        self.allow_private || self.allow_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// The addresses of `host:port` that may be connected to, or a block.
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, PluginError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (bare, port)
            .to_socket_addrs()
            .map_err(|e| {
                block(
                    "fetch_blocked",
                    Some(host.to_owned()),
                    format!("could not resolve host {host:?}: {e}"),
                )
            })?
            .collect();
        if self.host_allowed(bare) {
            return Ok(addrs);
        }
        for a in &addrs {
            if let Some(reason) = blocked_reason(a.ip()) {
                return Err(block(
                    "ssrf",
                    Some(host.to_owned()),
                    format!("refusing to fetch {host:?} -> {} ({reason}); allowlist the host in the http_fetch config (allow_hosts) for local development", a.ip()),
                ));
            }
        }
        Ok(addrs)
    }

    /// Checks a URL's scheme and host before it is requested.
    fn check_url(&self, url: &url::Url) -> Result<(), PluginError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(block(
                "fetch_blocked",
                Some(url.to_string()),
                format!("scheme {:?} not allowed; use http or https", url.scheme()),
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| block("fetch_blocked", Some(url.to_string()), format!("no host in URL {url}")))?;
        self.resolve(host, url.port_or_known_default().unwrap_or(80))
            .map(|_| ())
    }
}

/// Connects only to addresses the guard accepted, so a DNS answer that
/// changes between the check and the connection cannot reach an internal host.
struct PinnedResolver(Guard);

impl ureq::Resolver for PinnedResolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let (host, port) = netloc
            .rsplit_once(':')
            .ok_or_else(|| std::io::Error::other("no port"))?;
        let port: u16 = port.parse().map_err(std::io::Error::other)?;
        self.0
            .resolve(host, port)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

impl Plugin for HttpFetch {
    const NAME: &'static str = "http_fetch";
    const ENVELOPE: Envelope = Envelope {
        tier: 1,
        capabilities: &[CAP_NET],
        egress: &[EGRESS_OPEN],
    };

    fn new(config: Value) -> Result<Self, PluginError> {
        let config: Config = if config.is_null() {
            serde_json::from_value(json!({})).expect("defaults")
        } else {
            serde_json::from_value(config).map_err(|e| PluginError::invalid(format!("http_fetch config: {e}")))?
        };
        let guard = Guard {
            allow_hosts: config.allow_hosts,
            allow_private: config.allow_private || std::env::var("ZU_HTTP_ALLOW_PRIVATE").as_deref() == Ok("1"),
        };
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout(Duration::from_secs(config.timeout_s.max(1)))
            .resolver(PinnedResolver(guard.clone()))
            .build();
        Ok(HttpFetch {
            guard,
            agent,
            max_bytes: config.max_bytes,
            max_redirects: config.max_redirects,
        })
    }
}

impl HttpFetch {
    fn fetch(&self, url: &str) -> Result<JsonObject, PluginError> {
        let mut current =
            url::Url::parse(url).map_err(|e| PluginError::invalid(format!("invalid URL {url:?}: {e}")))?;
        for _ in 0..=self.max_redirects {
            self.guard.check_url(&current)?;
            let response = match self.agent.request_url("GET", &current).call() {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(ureq::Error::Transport(t)) => {
                    let msg = t.to_string();
                    if msg.contains("refusing to fetch") {
                        return Err(block("ssrf", current.host_str().map(String::from), msg));
                    }
                    let (host, port) = (current.host_str().unwrap_or_default(), current.port_or_known_default());
                    if let Some(denied) = port.and_then(|p| PluginError::net_denied(host, p)) {
                        return Err(denied);
                    }
                    return Err(PluginError::failed(format!("fetching {current} failed: {msg}")));
                }
            };
            let status = response.status();
            if (300..400).contains(&status) {
                if let Some(location) = response.header("location") {
                    current = current.join(location).map_err(|e| {
                        PluginError::failed(format!("bad redirect from {current} to {location:?}: {e}"))
                    })?;
                    continue; // the next hop is checked before it is requested
                }
            }
            let content_type = response.content_type().to_owned();
            let mut body = Vec::new();
            response
                .into_reader()
                .take(self.max_bytes + 1)
                .read_to_end(&mut body)
                .map_err(|e| PluginError::failed(format!("reading {current} failed: {e}")))?;
            if body.len() as u64 > self.max_bytes {
                return Err(block(
                    "fetch_blocked",
                    Some(current.to_string()),
                    format!("response from {current} exceeds max_bytes ({}); raise max_bytes in the http_fetch config if a larger page is expected", self.max_bytes),
                ));
            }
            let text = String::from_utf8_lossy(&body).into_owned();
            let out = json!({"status": status, "url": current.as_str(), "content_type": content_type, "text": text});
            return Ok(out.as_object().cloned().unwrap_or_default());
        }
        Err(block(
            "fetch_blocked",
            Some(url.to_owned()),
            format!("too many redirects (> {}) starting from {url}", self.max_redirects),
        ))
    }
}

impl Tool for HttpFetch {
    fn schema(&self) -> Value {
        json!({
            "name": "http_fetch",
            "description": "Fetch a URL with HTTP GET and return its status, content type and text.",
            "parameters": {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
        })
    }

    fn prompt_fragment(&self) -> String {
        "http_fetch(url): fetch a page's text. Cheapest; try first.".into()
    }

    fn call(&self, _ctx: &dyn RunContext, args: JsonObject) -> Result<JsonObject, PluginError> {
        let url = args
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| PluginError::invalid("http_fetch needs a string argument \"url\""))?;
        self.fetch(url)
    }
}

#[cfg(feature = "export")]
zu_plugin_api::export_plugins! { tools: [HttpFetch] }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_blocked_and_public_ones_pass() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:169.254.169.254",
            "2002:a9fe:a9fe::1",
            "224.0.0.1",
        ] {
            assert!(blocked_reason(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(blocked_reason(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[test]
    fn metadata_and_loopback_urls_are_security_blocks_before_any_request() {
        let tool = HttpFetch::new(Value::Null).unwrap();
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:1/",
            "http://localhost:1/",
        ] {
            match tool.fetch(url) {
                Err(PluginError::SecurityBlock(b)) => assert_eq!(b.kind, "ssrf", "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        match tool.fetch("file:///etc/passwd") {
            Err(PluginError::SecurityBlock(b)) => assert_eq!(b.kind, "fetch_blocked"),
            other => panic!("{other:?}"),
        }
    }
}
