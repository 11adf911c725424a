//! `zu cost`: what runs on a durable log spent — model calls, tokens and
//! dollars per model, and the model calls replay saved — as a table or JSON.
//! A model with no price reports its tokens and no dollars, never a guess.

use std::path::PathBuf;

use clap::Args;
use zu_runtime::{CostSummary, Prices};

use crate::{exit, Failure};
use zu_runtime::display::escape;

#[derive(Args)]
pub struct CostArgs {
    #[command(flatten)]
    log: crate::log::LogArgs,
    /// Only the runs of this trace (a pipeline, or one run): its UUID, or a
    /// unique prefix of 8 or more characters.
    #[arg(long, value_name = "UUID")]
    trace: Option<String>,
    /// Only this task's runs: its UUID, or a unique prefix of 8 or more characters.
    #[arg(long, value_name = "UUID")]
    task: Option<String>,
    /// A TOML price file (`[models."id"] input = .., output = ..`, USD per million tokens)
    /// added to the built-in table.
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CostArgs) -> Result<u8, Failure> {
    let prices = match &args.prices {
        Some(p) => Prices::with_file(p).map_err(|e| Failure::usage(e.to_string()))?,
        None => Prices::default(),
    };
    let crate::log::Log { bus, sink } = args.log.open(None)?;
    let filter = crate::ids::filter(&bus, &args.trace, &args.task)?;
    // Folded as the log streams by: a big log is never held whole.
    let mut summary = CostSummary::default();
    let (mut failed, mut seen) = (None, 0u64);
    for e in bus.stream(&filter, 1000) {
        match e {
            Ok(e) => {
                seen += 1;
                summary.fold(&e.event, &prices)
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    bus.close();
    if let Some(e) = failed {
        return Err(Failure::failed(format!("cannot read the {sink} log: {e}")));
    }
    if seen == 0 && (args.task.is_some() || args.trace.is_some()) {
        let (flag, id) = match (&args.task, &args.trace) {
            (Some(t), _) => ("--task", t),
            (None, Some(t)) => ("--trace", t),
            (None, None) => unreachable!("one was given"),
        };
        return Err(Failure::failed(format!(
            "{flag} {}: no such run on the {sink} log (zu events lists what it holds)",
            zu_runtime::display::escape(id)
        )));
    }
    if args.json {
        let mut out = serde_json::to_value(&summary).expect("plain data");
        round_dollars(&mut out);
        crate::outln!("{}", zu_runtime::display::json(&out.to_string()));
    } else {
        print_table(&summary);
    }
    Ok(exit::OK)
}

/// Dollars to a millionth, as sums of per-call floats carry noise below that.
fn round_dollars(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match x.as_f64() {
                    Some(d) if k == "usd" => *x = ((d * 1e6).round() / 1e6).into(),
                    _ => round_dollars(x),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(round_dollars),
        _ => {}
    }
}

fn dollars(usd: Option<f64>) -> String {
    usd.map_or_else(|| "no price".to_owned(), |d| format!("${d:.4}"))
}

fn print_table(s: &CostSummary) {
    crate::outln!(
        "{:<32} {:>6} {:>12} {:>12} {:>12}",
        "MODEL",
        "CALLS",
        "INPUT",
        "OUTPUT",
        "USD"
    );
    // Model names come from the log: anyone who could write it chose them.
    for (model, m) in &s.by_model {
        crate::outln!(
            "{:<32} {:>6} {:>12} {:>12} {:>12}",
            escape(model),
            m.calls,
            m.input_tokens,
            m.output_tokens,
            dollars(m.usd)
        );
    }
    crate::outln!(
        "{:<32} {:>6} {:>12} {:>12} {:>12}",
        "TOTAL",
        s.model_calls,
        s.input_tokens,
        s.output_tokens,
        dollars(s.usd)
    );
    if s.unpriced_calls > 0 {
        crate::outln!(
            "{} calls of models with no price: their tokens are counted, their dollars are not",
            s.unpriced_calls
        );
    }
    if s.replay_steps > 0 {
        crate::outln!("replay drove {} steps with no model call", s.replay_steps);
    }
}
