//! What each side of a provider boundary keeps of the conversations it
//! carries: one entry per conversation, taken out for a turn and put back
//! after it (no lock is held across the call, so runs on one provider do not
//! take turns), and bounded: past [`MAX_CONVERSATIONS`], the one used longest
//! ago is dropped, and its next turn crosses whole.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// How many conversations one provider holds at once.
pub const MAX_CONVERSATIONS: usize = 4096;

/// The conversations of one provider, keyed by `K` (a conversation id, or a
/// provider name and one).
#[doc(hidden)]
pub struct Conversations<K, V> {
    held: Mutex<Held<K, V>>,
}

struct Held<K, V> {
    entries: HashMap<K, (u64, V)>,
    clock: u64,
}

impl<K: Eq + Hash + Clone, V> Default for Conversations<K, V> {
    fn default() -> Self {
        Conversations {
            held: Mutex::new(Held {
                entries: HashMap::new(),
                clock: 0,
            }),
        }
    }
}

impl<K: Eq + Hash + Clone, V> Conversations<K, V> {
    /// Takes conversation `key` out for a turn (`None`: not held).
    pub fn take(&self, key: &K) -> Option<V> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.entries.remove(key).map(|(_, v)| v)
    }

    /// Puts conversation `key` back after a turn, dropping the one used
    /// longest ago when full.
    pub fn keep(&self, key: K, value: V) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.clock += 1;
        if held.entries.len() >= MAX_CONVERSATIONS && !held.entries.contains_key(&key) {
            if let Some(oldest) = held.entries.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| k.clone()) {
                held.entries.remove(&oldest);
            }
        }
        let now = held.clock;
        held.entries.insert(key, (now, value));
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_is_taken_out_and_put_back_and_the_oldest_goes_first() {
        let c: Conversations<u64, usize> = Conversations::default();
        for id in 0..MAX_CONVERSATIONS as u64 {
            c.keep(id, id as usize);
        }
        assert_eq!(c.take(&0), Some(0));
        c.keep(0, 10); // now the newest
        c.keep(u64::MAX, 1); // full: drops 1, the one used longest ago
        assert_eq!(c.len(), MAX_CONVERSATIONS);
        assert_eq!(c.take(&1), None);
        assert_eq!(c.take(&0), Some(10));
        assert_eq!(c.take(&0), None, "taken out while its turn runs");
    }
}
