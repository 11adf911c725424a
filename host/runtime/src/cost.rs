//! Cost: what runs spent, projected from their events — tokens and dollars
//! per model from every model call (`turn.completed`, and the extraction
//! calls Zu logs as `observation.extracted`), and the model calls replay
//! saved — priced from a table that a TOML file can extend or override.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zu_plugin_api::contracts::{Event, JsonObject};
use zu_plugin_api::events as ev;

/// USD per million tokens, input and output.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Per million input (prompt) tokens.
    pub input: f64,
    /// Per million output (completion) tokens.
    pub output: f64,
}

/// The price table: a model id is priced by the longest key it contains
/// (case-insensitive), so `anthropic/claude-sonnet-4.5` is `claude-sonnet`.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    by_key: BTreeMap<String, Price>,
}

/// The built-in table: public list rates, approximate (the reference's).
const BUILT_IN: [(&str, f64, f64); 6] = [
    ("claude-opus", 15.0, 75.0),
    ("claude-sonnet", 3.0, 15.0),
    ("claude-haiku", 0.80, 4.0),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4o", 2.50, 10.0),
    ("gpt-4", 30.0, 60.0),
];

impl Default for Prices {
    fn default() -> Self {
        Prices {
            by_key: BUILT_IN
                .iter()
                .map(|&(k, input, output)| (k.to_owned(), Price { input, output }))
                .collect(),
        }
    }
}

/// Why a price file was refused.
#[derive(Debug, thiserror::Error)]
#[error("price file {path}: {message}; expected [models.\"<model id or part of it>\"] tables with input = and output = in USD per million tokens")]
pub struct PriceFileError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    models: BTreeMap<String, Price>,
}

impl Prices {
    /// The built-in table with `path`'s `[models."id"]` entries added or
    /// replacing the built-in ones.
    pub fn with_file(path: &std::path::Path) -> Result<Self, PriceFileError> {
        let err = |message: String| PriceFileError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: PriceFile = toml::from_str(&text).map_err(|e| err(e.message().to_owned()))?;
        let mut prices = Prices::default();
        for (key, price) in file.models {
            let ok = |x: f64| x.is_finite() && x >= 0.0;
            if key.trim().is_empty() || !ok(price.input) || !ok(price.output) {
                return Err(err(format!("model {key:?}: a price must be a non-negative number")));
            }
            prices.by_key.insert(key.to_lowercase(), price);
        }
        Ok(prices)
    }

    /// The price of `model`, if the table has one.
    pub fn price(&self, model: &str) -> Option<Price> {
        let m = model.to_lowercase();
        self.by_key
            .iter()
            .filter(|(k, _)| m.contains(k.as_str()))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| *p)
    }

    /// What one call of `model` with `usage` cost, if `model` is priced.
    pub fn usd(&self, model: Option<&str>, usage: &JsonObject) -> Option<f64> {
        let p = self.price(model?)?;
        let (i, o) = usage_split(usage);
        Some(i as f64 / 1e6 * p.input + o as f64 / 1e6 * p.output)
    }
}

/// The largest token count one call may report (`u32::MAX`): no model has
/// a context near it, and sums of such counts cannot overflow.
pub const MAX_TOKEN_COUNT: u64 = u32::MAX as u64;

/// A count under one of `keys`: an integer up to [`MAX_TOKEN_COUNT`]; anything
/// else (a float, a string, 1e300, a negative) counts as nothing.
fn tokens(usage: &JsonObject, keys: [&str; 2]) -> u64 {
    keys.iter()
        .find_map(|k| usage.get(*k))
        .and_then(Value::as_u64)
        .filter(|n| *n <= MAX_TOKEN_COUNT)
        .unwrap_or(0)
}

/// (input, output) tokens of a usage object, in either naming.
pub fn usage_split(usage: &JsonObject) -> (u64, u64) {
    (
        tokens(usage, ["input_tokens", "prompt_tokens"]),
        tokens(usage, ["output_tokens", "completion_tokens"]),
    )
}

/// What one model spent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelCost {
    /// Calls made.
    pub calls: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Dollars; `None` when the model has no price.
    pub usd: Option<f64>,
}

/// What a set of runs spent and what replay saved.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CostSummary {
    /// Model calls made (turns and extraction calls).
    pub model_calls: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input plus output tokens.
    pub total_tokens: u64,
    /// Dollars of the priced calls; `None` when no call was priced.
    pub usd: Option<f64>,
    /// Calls of models with no price (their tokens count, their dollars cannot).
    pub unpriced_calls: u64,
    /// Steps replayed from a track: each a model call not made.
    pub replay_steps: u64,
    /// The same number, under the reference's name.
    pub model_calls_saved: u64,
    /// Per model id (`(unknown)` when the provider named none).
    pub by_model: BTreeMap<String, ModelCost>,
}

impl CostSummary {
    /// Folds `events` (any order) into what they spent.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a Event>, prices: &Prices) -> Self {
        let mut s = CostSummary::default();
        for e in events {
            s.fold(e, prices);
        }
        s
    }

    /// Adds what one event spent (a model call) or saved (a replayed step).
    pub fn fold(&mut self, e: &Event, prices: &Prices) {
        let p = e.payload();
        match e.event_type() {
            ev::TURN_STARTED if p.get("replay") == Some(&Value::Bool(true)) => {
                self.replay_steps += 1;
                self.model_calls_saved = self.replay_steps;
            }
            ev::TURN_COMPLETED | ev::OBSERVATION_EXTRACTED => {
                let usage = p.get("usage").and_then(Value::as_object).cloned().unwrap_or_default();
                let model = p.get("model").and_then(Value::as_str);
                self.add(model, &usage, prices);
            }
            _ => {}
        }
    }

    fn add(&mut self, model: Option<&str>, usage: &JsonObject, prices: &Prices) {
        let (i, o) = usage_split(usage);
        let usd = prices.usd(model, usage);
        self.model_calls += 1;
        self.input_tokens += i;
        self.output_tokens += o;
        self.total_tokens += i + o;
        let m = self
            .by_model
            .entry(model.unwrap_or("(unknown)").to_owned())
            .or_default();
        m.calls += 1;
        m.input_tokens += i;
        m.output_tokens += o;
        match usd {
            Some(d) => {
                m.usd = Some(m.usd.unwrap_or(0.0) + d);
                self.usd = Some(self.usd.unwrap_or(0.0) + d);
            }
            None => self.unpriced_calls += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn event(ty: &'static str, payload: Value) -> Event {
        let id = Uuid::new_v4();
        Event::new(id, id, None, ty, "loop", payload.as_object().cloned().unwrap()).unwrap()
    }

    #[test]
    fn the_longest_matching_key_prices_a_model_and_unknown_models_get_no_dollars() {
        let p = Prices::default();
        assert_eq!(p.price("openai/GPT-4o-mini-2024").unwrap().input, 0.15);
        assert_eq!(p.price("gpt-4o").unwrap().input, 2.5);
        assert_eq!(p.price("anthropic/claude-sonnet-4.5").unwrap().output, 15.0);
        assert!(p.price("llama3").is_none());
        let events = [
            event(
                ev::TURN_COMPLETED,
                json!({"model": "gpt-4o", "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 100_000}}),
            ),
            event(
                ev::TURN_COMPLETED,
                json!({"model": "llama3", "usage": {"input_tokens": 5, "output_tokens": 7}}),
            ),
            event(ev::TURN_STARTED, json!({"step": 1, "replay": true})),
        ];
        let s = CostSummary::of(&events, &p);
        assert_eq!(
            (s.model_calls, s.total_tokens, s.replay_steps, s.unpriced_calls),
            (2, 1_100_012, 1, 1)
        );
        assert!((s.usd.unwrap() - 3.5).abs() < 1e-9);
        assert_eq!(s.by_model["llama3"].usd, None);
        assert_eq!(s.by_model["llama3"].input_tokens, 5);
    }

    #[test]
    fn a_price_file_adds_and_overrides_and_a_bad_one_says_what_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("prices.toml");
        std::fs::write(
            &f,
            "[models.llama3]\ninput = 0.1\noutput = 0.2\n[models.gpt-4o]\ninput = 1\noutput = 2\n",
        )
        .unwrap();
        let p = Prices::with_file(&f).unwrap();
        assert_eq!(p.price("llama3:8b").unwrap().output, 0.2);
        assert_eq!(p.price("gpt-4o").unwrap().input, 1.0);
        std::fs::write(&f, "[models.x]\ninput = -1\noutput = 2\n").unwrap();
        let e = Prices::with_file(&f).unwrap_err().to_string();
        assert!(e.contains("non-negative") && e.contains("[models."), "{e}");
        std::fs::write(&f, "nonsense").unwrap();
        assert!(Prices::with_file(&f).is_err());
    }
}
