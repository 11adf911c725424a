//! The name server inside a `net` sandbox, as zu answers it: a question for
//! a granted name gets its forwarder's address, any other name "no such
//! name" — and is a refused reach (reverse lookups excepted).

use std::net::Ipv4Addr;

const HEADER: usize = 12;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const NXDOMAIN: u16 = 3;
const FORMERR: u16 = 1;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The name a question asks for and where the question ends.
fn question(query: &[u8]) -> Option<(String, usize)> {
    let mut at = HEADER;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // Queries carry no compression pointers; a name is at most 255 bytes.
        if len > 63 || at + len > query.len() || labels.iter().map(|l| l.len() + 1).sum::<usize>() + len > 255 {
            return None;
        }
        let label = &query[at..at + len];
        // Host names only: nothing a terminal or a log line could take for more.
        if !label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    be16(query, at + 2)?;
    Some((labels.join("."), at + 4))
}

/// The answer to `query` (`None`: not a question at all, dropped), and the
/// name it refused, if any. `resolve` gives a granted name's address.
pub fn answer(query: &[u8], resolve: impl Fn(&str) -> Option<Ipv4Addr>) -> Option<(Vec<u8>, Option<String>)> {
    let flags = be16(query, 2)?;
    if flags & 0x8000 != 0 {
        return None; // an answer, not a question
    }
    let reply = |rcode: u16, end: usize, record: Option<Ipv4Addr>| {
        let mut out = Vec::with_capacity(end + 16);
        out.extend_from_slice(&query[..2]);
        out.extend_from_slice(&(0x8080 | (flags & 0x0100) | rcode).to_be_bytes());
        let questions = u16::from(end > HEADER);
        out.extend_from_slice(&questions.to_be_bytes());
        out.extend_from_slice(&u16::from(record.is_some()).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        if end > HEADER {
            out.extend_from_slice(&query[HEADER..end]);
        }
        if let Some(ip) = record {
            out.extend_from_slice(&[0xC0, 0x0C, 0, TYPE_A as u8, 0, CLASS_IN as u8, 0, 0, 0, 60, 0, 4]);
            out.extend_from_slice(&ip.octets());
        }
        out
    };
    let parsed = question(query).filter(|_| be16(query, 4) == Some(1));
    let Some((name, end)) = parsed else {
        return Some((reply(FORMERR, HEADER, None), None));
    };
    let (qtype, qclass) = (be16(query, end - 4)?, be16(query, end - 2)?);
    match resolve(&name) {
        Some(ip) if qtype == TYPE_A && qclass == CLASS_IN => Some((reply(0, end, Some(ip)), None)),
        // A granted name has no other records (no IPv6 address: the forwarder is IPv4).
        Some(_) => Some((reply(0, end, None), None)),
        None if name.ends_with(".arpa") || name.is_empty() => Some((reply(NXDOMAIN, end, None), None)),
        None => Some((reply(NXDOMAIN, end, None), Some(name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    fn granted(name: &str) -> Option<Ipv4Addr> {
        (name == "api.example.com").then_some(Ipv4Addr::new(127, 77, 0, 1))
    }

    #[test]
    fn a_granted_name_resolves_to_its_forwarder_and_others_are_refused() {
        let (a, refused) = answer(&query("API.example.com", 1), granted).unwrap();
        assert_eq!(refused, None);
        assert_eq!(&a[..2], &[0xAB, 0xCD], "the question's id");
        assert_eq!(be16(&a, 2).unwrap() & 0x000F, 0, "no error");
        assert_eq!(be16(&a, 6), Some(1), "one answer");
        assert_eq!(&a[a.len() - 4..], &[127, 77, 0, 1]);
        let (aaaa, refused) = answer(&query("api.example.com", 28), granted).unwrap();
        assert_eq!(
            (be16(&aaaa, 6), refused),
            (Some(0), None),
            "no IPv6 address, not refused"
        );
        let (nx, refused) = answer(&query("evil.example.org", 1), granted).unwrap();
        assert_eq!(be16(&nx, 2).unwrap() & 0x000F, NXDOMAIN);
        assert_eq!(refused.as_deref(), Some("evil.example.org"));
        let (_, refused) = answer(&query("1.0.0.127.in-addr.arpa", 12), granted).unwrap();
        assert_eq!(refused, None, "a reverse lookup is no reach");
    }

    #[test]
    fn garbage_is_dropped_or_answered_as_malformed_never_a_panic() {
        assert!(answer(&[], granted).is_none());
        assert!(answer(&[0; 3], granted).is_none(), "not even a header");
        let (short, _) = answer(&[7, 7, 0, 0, 0], granted).unwrap();
        assert_eq!(
            (&short[..2], be16(&short, 2).unwrap() & 0x000F),
            (&[7u8, 7][..], FORMERR)
        );
        let mut q = query("a.b", 1);
        q[12] = 200; // a label longer than the packet
        let (bad, refused) = answer(&q, granted).unwrap();
        assert_eq!((be16(&bad, 2).unwrap() & 0x000F, refused), (FORMERR, None));
        let mut escape = query("a.b", 1);
        escape[13] = 0x1b; // ESC in a label
        let (bad, refused) = answer(&escape, granted).unwrap();
        assert_eq!((be16(&bad, 2).unwrap() & 0x000F, refused), (FORMERR, None));
        for len in 0..40 {
            let _ = answer(&query("x.example.com", 1)[..len.min(31)], granted);
        }
    }
}
