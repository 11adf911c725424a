//! The run's budgets as the reference counts them: tokens from each turn's
//! usage, the wall time, and which budget a run has spent; beyond it, the
//! dollars spent against `max_usd`. (Steps and tool calls per turn are
//! counted where they happen, in the step machine.)

use std::time::Duration;

use serde_json::Value;
use std::sync::Arc;

use zu_plugin_api::contracts::{Budget, JsonObject};

use crate::cost::{Prices, MAX_TOKEN_COUNT};

/// Checks a turn's usage: every count a provider reports (a `*_tokens`
/// key) is a non-negative integer that fits ([`MAX_TOKEN_COUNT`]); the
/// error names the field and what it held.
pub(super) fn check_usage(usage: &JsonObject) -> Result<(), String> {
    for (key, value) in usage {
        if !key.ends_with("_tokens") {
            continue; // details a provider adds (nested objects, ids) are not counts
        }
        let fits = value.as_u64().is_some_and(|n| n <= MAX_TOKEN_COUNT);
        if !fits && !value.is_null() {
            let mut shown = value.to_string();
            if shown.len() > 40 {
                let cut = (0..=40).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
                shown.truncate(cut);
                shown.push('…');
            }
            return Err(format!(
                "usage field {key:?} is {shown}, not a token count (an integer from 0 to {MAX_TOKEN_COUNT})"
            ));
        }
    }
    Ok(())
}

fn count(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).map_or(0, |n| n.min(MAX_TOKEN_COUNT))
}

/// The tokens a turn used, as the reference counts them: `total_tokens`, else
/// input plus output (each a usage [`check_usage`] passed).
pub(super) fn usage_tokens(usage: &JsonObject) -> u64 {
    if usage.contains_key("total_tokens") {
        return count(usage.get("total_tokens"));
    }
    count(usage.get("input_tokens")) + count(usage.get("output_tokens"))
}

/// Dollars spent by a run's model calls, against its dollar budget.
#[derive(Default)]
pub(super) struct Spend {
    pub(super) usd: f64,
    pub(super) max_usd: Option<f64>,
    pub(super) prices: Arc<Prices>,
    /// Under a dollar budget, the first served model the table cannot price.
    pub(super) unpriced: Option<String>,
}

impl Spend {
    /// Adds one call of `model` (the model the provider says it served). A
    /// call the table cannot price adds nothing; under a dollar budget it is
    /// remembered, and the budget ends the run (`budget:unpriced_model`).
    pub(super) fn add(&mut self, model: Option<&str>, usage: &JsonObject) {
        match self.prices.usd(model, usage) {
            Some(usd) => self.usd += usd,
            None if self.max_usd.is_some() && self.unpriced.is_none() => {
                let model = model.unwrap_or("(a provider that names no model)");
                tracing::warn!(
                    model,
                    "a model call the price table cannot price; the dollar budget ends the run"
                );
                self.unpriced = Some(model.to_owned());
            }
            None => {}
        }
    }

    fn over(&self) -> bool {
        self.max_usd.is_some_and(|max| self.usd > max)
    }
}

/// The budget a run has spent, if any: its wall time, its tokens, its
/// dollars (or a call whose dollars the budget cannot see).
pub(super) fn budget_reason(elapsed: Duration, tokens: u64, budget: &Budget, spend: &Spend) -> Option<String> {
    if elapsed.as_secs_f64() > budget.wall_time_s as f64 {
        Some("budget:wall_time_s".into())
    } else if tokens >= budget.max_tokens {
        Some("budget:max_tokens".into())
    } else if let Some(model) = &spend.unpriced {
        Some(format!(
            "budget:unpriced_model: the served model {model:?} has no price, so --max-usd cannot count it; add it to a price file (--prices FILE, or [run] prices in zu.toml)"
        ))
    } else if spend.over() {
        Some("budget:max_usd".into())
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
    fn usage_tokens_prefer_total() {
        assert_eq!(usage_tokens(&obj(json!({"total_tokens": 9, "input_tokens": 100}))), 9);
        assert_eq!(usage_tokens(&obj(json!({"input_tokens": 3, "output_tokens": 4}))), 7);
        assert_eq!(usage_tokens(&obj(json!({"input_tokens": null}))), 0);
    }

    #[test]
    fn usage_that_is_not_a_count_is_refused_naming_the_field() {
        assert!(check_usage(&obj(
            json!({"input_tokens": 3, "output_tokens": 4, "details": {"x": -1}})
        ))
        .is_ok());
        assert!(check_usage(&obj(json!({"input_tokens": MAX_TOKEN_COUNT}))).is_ok());
        for bad in [
            json!(1e300),
            json!(-1),
            json!(2.5),
            json!("4"),
            json!([1]),
            json!(MAX_TOKEN_COUNT + 1),
        ] {
            let e = check_usage(&obj(json!({"input_tokens": 1, "output_tokens": bad}))).unwrap_err();
            assert!(e.contains("\"output_tokens\""), "{e}");
        }
    }

    #[test]
    fn an_unpriced_served_model_ends_a_run_with_a_dollar_budget_and_names_it() {
        let usage = obj(json!({"input_tokens": 10, "output_tokens": 10}));
        let budget = Budget::default();
        let mut spend = Spend {
            max_usd: Some(1.0),
            ..Spend::default()
        };
        spend.add(Some("gpt-4o"), &usage);
        assert_eq!(budget_reason(Duration::ZERO, 0, &budget, &spend), None);
        spend.add(Some("no-such-model-7"), &usage);
        let reason = budget_reason(Duration::ZERO, 0, &budget, &spend).unwrap();
        assert!(
            reason.starts_with("budget:unpriced_model") && reason.contains("no-such-model-7"),
            "{reason}"
        );
        let mut free = Spend::default();
        free.add(Some("no-such-model-7"), &usage);
        assert_eq!(budget_reason(Duration::ZERO, 0, &budget, &free), None);
    }
}
