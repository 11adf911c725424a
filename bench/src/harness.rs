//! The measurement harness, the reference's one to one: each figure is a rate
//! (`ops / elapsed`), one untimed warm-up repetition then five timed ones,
//! state built outside the timed region; the median is reported with its
//! samples, min, max and spread. Also the machine record.

use std::time::Instant;

use serde_json::{json, Map, Value};

/// Timed repetitions per figure.
pub const REPS: usize = 5;
/// Untimed repetitions before them.
pub const WARMUP: usize = 1;

/// A figure that went wrong: the work did not happen as the workload says.
#[derive(Debug)]
pub struct BenchError(pub String);

/// Fails the run unless `cond` holds.
pub fn check(cond: bool, msg: impl Into<String>) -> Result<(), BenchError> {
    if cond {
        Ok(())
    } else {
        Err(BenchError(msg.into()))
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The reference's summary of a list of rates.
pub fn summarize(rates: &[f64], unit: &str, extra: Value) -> Value {
    let m = median(rates);
    let (min, max) = rates
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let mut out = json!({
        "median": m,
        "unit": unit,
        "samples": rates,
        "min": min,
        "max": max,
        "spread_pct": ((max - min) / m * 1000.0).round() / 10.0,
    });
    if let (Value::Object(o), Value::Object(e)) = (&mut out, extra) {
        o.extend(e);
    }
    out
}

/// Times `body` on fresh state from `setup`: WARMUP untimed reps, then REPS
/// timed ones; the rate is `ops / seconds`.
pub fn measure<S>(
    name: &str,
    ops: u64,
    unit: &str,
    extra: Value,
    mut setup: impl FnMut() -> S,
    mut body: impl FnMut(&mut S),
) -> Value {
    let mut rates = Vec::with_capacity(REPS);
    for rep in 0..WARMUP + REPS {
        let mut state = setup();
        let t0 = Instant::now();
        body(&mut state);
        let dt = t0.elapsed().as_secs_f64();
        if rep >= WARMUP {
            rates.push(ops as f64 / dt);
        }
        drop(state);
    }
    let mut extra = extra;
    if let Value::Object(o) = &mut extra {
        o.insert("ops_per_rep".into(), ops.into());
    }
    let out = summarize(&rates, unit, extra);
    eprintln!(
        "  {name:<40} median {:>16.1} {unit}",
        out["median"].as_f64().unwrap_or(0.0)
    );
    out
}

/// [`measure`] for `times` calls of one operation that needs no fresh state.
pub fn measure_repeated<T>(name: &str, times: usize, unit: &str, extra: Value, op: impl Fn() -> T) -> Value {
    measure(
        name,
        times as u64,
        unit,
        extra,
        || (),
        |_| {
            for _ in 0..times {
                std::hint::black_box(op());
            }
        },
    )
}

/// Median milliseconds of a fixed integer loop, at the start and end of a run,
/// so host contention shows.
pub fn calibration_loop_ms() -> f64 {
    fn f() -> u64 {
        let mut s = 0u64;
        for i in 0..30_000_000u64 {
            s = std::hint::black_box(s.wrapping_add(i));
        }
        s
    }
    let spin = Instant::now();
    while spin.elapsed().as_secs_f64() < 0.3 {
        std::hint::black_box(f());
    }
    let mut ts: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            std::hint::black_box(f());
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ts.sort_by(|a, b| a.total_cmp(b));
    (ts[2] * 1000.0).round() / 1000.0
}

fn read_first(path: &str, prefix: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// The machine: CPU count and model, load, the compiler.
pub fn machine_info() -> Map<String, Value> {
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let mut m = Map::new();
    m.insert(
        "nproc".into(),
        std::thread::available_parallelism().map_or(0, |n| n.get()).into(),
    );
    m.insert("cpu_model".into(), read_first("/proc/cpuinfo", "model name").into());
    m.insert("rustc".into(), rustc.into());
    m.insert("os".into(), std::env::consts::OS.into());
    m
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> Value {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| {
            s.split_whitespace()
                .take(3)
                .filter_map(|x| x.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .map_or(Value::Null, |v| json!(v))
}

/// A `/proc/self/status` field in KiB.
pub fn proc_status_kib(field: &str) -> Option<u64> {
    read_first("/proc/self/status", field)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The peak resident set so far, in KiB (`ru_maxrss` on Linux is VmHWM).
pub fn maxrss_kib() -> Option<u64> {
    proc_status_kib("VmHWM")
}
