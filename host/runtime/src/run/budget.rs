//! The run's budgets as the reference counts them: tokens from each turn's
//! usage, the wall time, and which budget a run has spent; beyond it, the
//! dollars spent against `max_usd`. (Steps and tool calls per turn are
//! counted where they happen, in the step machine.)

use std::time::Duration;

use serde_json::Value;
use std::sync::Arc;

use zu_plugin_api::contracts::{Budget, JsonObject};

use crate::cost::Prices;

fn as_int(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f.max(0.0) as u64))
            .unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(Value::Bool(b)) => u64::from(*b),
        _ => 0,
    }
}

/// The tokens a turn used, as the reference counts them: `total_tokens`, else
/// input plus output; garbage counts as nothing.
pub(super) fn usage_tokens(usage: &JsonObject) -> u64 {
    if usage.contains_key("total_tokens") {
        return as_int(usage.get("total_tokens"));
    }
    as_int(usage.get("input_tokens")) + as_int(usage.get("output_tokens"))
}

/// Dollars spent by a run's model calls, against its dollar budget.
#[derive(Default)]
pub(super) struct Spend {
    pub(super) usd: f64,
    pub(super) max_usd: Option<f64>,
    pub(super) prices: Arc<Prices>,
}

impl Spend {
    /// Adds one call of `model`; a call the table cannot price adds nothing
    /// (a run with a dollar budget starts only with priced providers).
    pub(super) fn add(&mut self, model: Option<&str>, usage: &JsonObject) {
        match self.prices.usd(model, usage) {
            Some(usd) => self.usd += usd,
            None if self.max_usd.is_some() => {
                tracing::warn!(
                    model,
                    "a model call the price table cannot price; the dollar budget does not see it"
                )
            }
            None => {}
        }
    }

    fn over(&self) -> bool {
        self.max_usd.is_some_and(|max| self.usd > max)
    }
}

/// The budget a run has spent, if any: its wall time, its tokens, its dollars.
pub(super) fn budget_reason(elapsed: Duration, tokens: u64, budget: &Budget, spend: &Spend) -> Option<&'static str> {
    if elapsed.as_secs_f64() > budget.wall_time_s as f64 {
        Some("budget:wall_time_s")
    } else if tokens >= budget.max_tokens {
        Some("budget:max_tokens")
    } else if spend.over() {
        Some("budget:max_usd")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn usage_tokens_prefer_total_and_tolerate_garbage() {
        assert_eq!(usage_tokens(&obj(json!({"total_tokens": 9, "input_tokens": 100}))), 9);
        assert_eq!(usage_tokens(&obj(json!({"input_tokens": 3, "output_tokens": "4"}))), 7);
        assert_eq!(
            usage_tokens(&obj(json!({"input_tokens": null, "output_tokens": [1]}))),
            0
        );
    }
}
