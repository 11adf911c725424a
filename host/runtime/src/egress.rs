//! What the sandboxes' egress gates saw, kept until a run writes it down:
//! connections forwarded and reaches refused, counted per plugin, host and
//! port. The gates note; the run takes the notes after each plugin call and
//! records them as `harness.egress.observed` / `harness.egress.refused`.

use std::collections::BTreeMap;
use std::sync::{Mutex, Weak};

/// A live gate: it notes what it has already been asked before a take.
pub trait Gate: Send + Sync {
    /// Returns once every connection made to it so far is noted, or at `until`.
    fn settle(&self, until: std::time::Instant);
}

static GATES: Mutex<Vec<Weak<dyn Gate>>> = Mutex::new(Vec::new());

/// Registers a gate whose notes a [`take`] waits for while it lives.
pub fn register(gate: Weak<dyn Gate>) {
    let mut gates = GATES.lock().unwrap_or_else(|p| p.into_inner());
    gates.retain(|g| g.strong_count() > 0);
    gates.push(gate);
}

/// One kind of reach the gate saw.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reach {
    /// The plugins of the sandboxed process (`KIND.NAME`, joined by `+`).
    pub plugin: String,
    /// The host name or address asked for.
    pub host: String,
    /// The port; `None` for a name lookup.
    pub port: Option<u16>,
    /// Forwarded (true) or refused.
    pub allowed: bool,
}

/// Distinct reaches kept per plugin between two takes; past it, its further
/// new ones are counted under one entry (a plugin cannot grow zu's memory by
/// asking for endless names, nor crowd out another plugin's reaches).
const MAX_DISTINCT: usize = 64;

static NOTES: Mutex<BTreeMap<Reach, u64>> = Mutex::new(BTreeMap::new());

/// Notes one reach.
pub fn note(reach: Reach) {
    let mut notes = NOTES.lock().unwrap_or_else(|p| p.into_inner());
    let full = || notes.keys().filter(|r| r.plugin == reach.plugin).count() >= MAX_DISTINCT;
    let key = if !notes.contains_key(&reach) && full() {
        Reach {
            host: "(more hosts)".into(),
            port: None,
            ..reach
        }
    } else {
        reach
    };
    *notes.entry(key).or_insert(0) += 1;
}

/// Takes every reach noted since the last take, with its count, once the
/// live gates have noted what they were already asked.
pub fn take() -> Vec<(Reach, u64)> {
    let live: Vec<_> = GATES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    // One second for all of them: a gate kept busy cannot hold a run longer.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    live.iter().for_each(|g| g.settle(until));
    let mut notes = NOTES.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::take(&mut *notes).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_are_counted_and_bounded() {
        let reach = |host: String, allowed| Reach {
            plugin: "tools.t".into(),
            host,
            port: Some(443),
            allowed,
        };
        let _ = take();
        note(reach("a".into(), true));
        note(reach("a".into(), true));
        note(reach("b".into(), false));
        for i in 0..1000 {
            note(reach(format!("n{i}"), false));
        }
        note(Reach {
            plugin: "tools.other".into(),
            ..reach("c".into(), false)
        });
        let notes = take();
        assert_eq!(
            notes.len(),
            MAX_DISTINCT + 2,
            "bounded per plugin, plus the overflow entry"
        );
        assert!(notes.contains(&(reach("a".into(), true), 2)));
        assert!(
            notes.iter().any(|(r, _)| r.plugin == "tools.other" && r.host == "c"),
            "not crowded out"
        );
        assert!(take().is_empty(), "taken once");
    }
}
