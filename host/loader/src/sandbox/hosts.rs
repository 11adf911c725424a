//! The hosts a `net` sandbox reaches: those the plugin declared (a host
//! without a port means its ports 443 and 80), or those the user grants in
//! their place (each within the declaration; `*` only where `*` was
//! declared), plus the hosts of the URLs its config names (the config is
//! the user's own word: a provider's `base_url`, a sink's database `url`).

use serde_json::Value;

pub use zu_plugin_api::ports::EGRESS_OPEN;

use super::GrantTooWide;

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    host: String,
    port: Option<u16>,
}

fn valid_host(h: &str) -> bool {
    if let Ok(ip) = h.parse::<std::net::IpAddr>() {
        return !ip.is_unspecified();
    }
    // A name whose last label is a number (`127.1`, `2130706433`) or that
    // spells one in hex (`0x7f000001`) is an address to the C library:
    // not a name, so not a way to hide one.
    let last = h.rsplit('.').next().unwrap_or_default();
    !h.is_empty()
        && h.len() <= 253
        && !last.bytes().all(|b| b.is_ascii_digit())
        && !h.split('.').any(|l| l.starts_with("0x"))
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a URL's authority.
fn parse(entry: &str) -> Option<Entry> {
    let entry = entry.trim();
    if let Some((scheme, rest)) = entry.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let mut e = parse(authority)?;
        if e.port.is_none() {
            e.port = Some(match scheme.to_ascii_lowercase().as_str() {
                "http" | "ws" => 80,
                "https" | "wss" => 443,
                "postgres" | "postgresql" => 5432,
                "mysql" => 3306,
                "redis" | "rediss" => 6379,
                "mongodb" => 27017,
                "amqp" => 5672,
                _ => return None,
            });
        }
        return Some(e);
    }
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else if entry.parse::<std::net::Ipv6Addr>().is_ok() {
        (entry, None)
    } else {
        match entry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (entry, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => None,
    };
    let host = host.to_ascii_lowercase();
    valid_host(&host).then_some(Entry { host, port })
}

fn expand(e: &Entry) -> Vec<String> {
    let host = if e.host.contains(':') {
        format!("[{}]", e.host)
    } else {
        e.host.clone()
    };
    match e.port {
        Some(p) => vec![format!("{host}:{p}")],
        None => vec![format!("{host}:443"), format!("{host}:80")],
    }
}

/// The hosts of the URLs a config gives under a URL's key (`url`,
/// `base_url`, `*_url`, `*_urls`), at any depth: not any string that looks
/// like one (an example in a prompt, a deny list).
fn config_hosts(config: &Value, out: &mut Vec<Entry>) {
    let is_url_key = |k: &str| k == "url" || k.ends_with("_url") || k.ends_with("_urls");
    let urls = |v: &Value, out: &mut Vec<Entry>| match v {
        Value::String(s) if s.len() < 4096 => out.extend(parse(s).filter(|_| s.contains("://"))),
        Value::Array(items) => out.extend(
            items
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| s.contains("://") && s.len() < 4096)
                .filter_map(parse),
        ),
        _ => {}
    };
    match config {
        Value::Object(map) => {
            for (k, v) in map {
                if is_url_key(k) {
                    urls(v, out);
                } else {
                    config_hosts(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| config_hosts(v, out)),
        _ => {}
    }
}

/// The `host:port` entries a plugin that `declared` these egress hosts
/// reaches, given the user's `granted` hosts (in place of the declared ones)
/// and its config; `["*"]` for the open network.
pub fn reached(declared: &[String], granted: Option<&[String]>, config: &Value) -> Result<Vec<String>, GrantTooWide> {
    let open = declared.iter().any(|d| d == EGRESS_OPEN);
    let declared: Vec<Entry> = declared.iter().filter_map(|d| parse(d)).collect();
    let mut out = Vec::new();
    match granted {
        Some(granted) => {
            for g in granted {
                if g == EGRESS_OPEN {
                    if !open {
                        return Err(GrantTooWide(
                            "the grant opens the network (hosts = [\"*\"]) to a plugin that does not declare the open network (egress \"*\"); grant the hosts it declares instead".into(),
                        ));
                    }
                    return Ok(vec![EGRESS_OPEN.to_owned()]);
                }
                let e = parse(g).ok_or_else(|| {
                    GrantTooWide(format!(
                        "the granted host {g:?} is not a host name, address, host:port or URL"
                    ))
                })?;
                let within = open
                    || declared
                        .iter()
                        .any(|d| d.host == e.host && (d.port.is_none() || d.port == e.port));
                if !within {
                    return Err(GrantTooWide(format!(
                        "the grant gives network access to {g} to a plugin that does not declare it (it declares {}); a grant narrows what a plugin declared, never widens it",
                        if declared.is_empty() { "no hosts".to_owned() } else { declared.iter().flat_map(expand).collect::<Vec<_>>().join(", ") }
                    )));
                }
                out.extend(expand(&e));
            }
        }
        None => out.extend(declared.iter().flat_map(expand)),
    }
    let mut named = Vec::new();
    config_hosts(config, &mut named);
    // Under a grant, only what it allows: a grant narrows, never widens.
    if let Some(granted) = granted {
        let allowed: Vec<Entry> = granted.iter().filter_map(|g| parse(g)).collect();
        named.retain(|n| {
            allowed
                .iter()
                .any(|a| a.host == n.host && (a.port.is_none() || a.port == n.port))
        });
    }
    out.extend(named.iter().flat_map(expand));
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn declared_hosts_granted_hosts_and_the_configs_urls() {
        let openai = reached(
            &s(&["api.openai.com"]),
            None,
            &json!({"base_url": "http://127.0.0.1:8080/v1"}),
        )
        .unwrap();
        assert_eq!(
            openai,
            s(&["127.0.0.1:8080", "api.openai.com:443", "api.openai.com:80"])
        );
        let pg = reached(&s(&["*"]), None, &json!({"url": "postgresql://u:p@DB.example.com/x"})).unwrap();
        assert_eq!(
            pg,
            s(&["db.example.com:5432"]),
            "an open declaration reaches only what is named, unless granted"
        );
        let narrowed = reached(&s(&["api.openai.com"]), Some(&s(&["api.openai.com:443"])), &Value::Null).unwrap();
        assert_eq!(narrowed, s(&["api.openai.com:443"]));
        let config = json!({"base_url": "http://127.0.0.1:8080/v1", "prompt": "see https://evil.example.org"});
        let narrowed = reached(&s(&["api.openai.com"]), Some(&s(&["api.openai.com:443"])), &config).unwrap();
        assert_eq!(
            narrowed,
            s(&["api.openai.com:443"]),
            "a grant keeps the config's hosts out too"
        );
        let open = reached(&s(&["*"]), None, &config).unwrap();
        assert_eq!(open, s(&["127.0.0.1:8080"]), "only a URL's key names a host");
        assert_eq!(reached(&s(&["*"]), Some(&s(&["*"])), &Value::Null).unwrap(), s(&["*"]));
        assert_eq!(
            reached(&s(&["*"]), Some(&s(&["[::1]:99", "x.org:1"])), &Value::Null).unwrap(),
            s(&["[::1]:99", "x.org:1"])
        );
        let wider = reached(&s(&["api.openai.com"]), Some(&s(&["evil.com"])), &Value::Null).unwrap_err();
        assert!(wider.to_string().contains("does not declare it"), "{wider}");
        let open = reached(&s(&["api.openai.com:443"]), Some(&s(&["*"])), &Value::Null).unwrap_err();
        assert!(open.to_string().contains("open"), "{open}");
        let port = reached(
            &s(&["api.openai.com:443"]),
            Some(&s(&["api.openai.com:22"])),
            &Value::Null,
        );
        assert!(port.is_err(), "another port is wider");
        for bad in [
            "a b",
            "host:99999",
            "host:0",
            "",
            "[::1",
            "x/y",
            "127.1:80",
            "2130706433",
            "0x7f000001",
            "0.0.0.0:80",
            "[::]:80",
        ] {
            assert!(reached(&s(&["*"]), Some(&s(&[bad])), &Value::Null).is_err(), "{bad:?}");
        }
    }
}
