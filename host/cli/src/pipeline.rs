//! `zu pipeline FILE`: phases from a TOML file, run in order under one trace
//! with the plugins and settings of `zu run`. A phase's text may use the
//! previous phase's value (`{previous}`, `{previous.KEY}`); on a durable
//! sink, running the file again skips the phases that already completed.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::{Budget, RunResult, TaskSpec};
use zu_runtime::{run_pipeline, PipelinePhase};

use crate::run::{exit_code, plan, prepare, Query, RunArgs};
use crate::settings::{to_json, FileBudget};
use crate::Failure;

#[derive(Args)]
pub struct PipelineArgs {
    /// The pipeline: `id = "UUID"` (optional: by default derived from the file's path, so running
    /// it again resumes it) and `[[phase]]` tables with `name`, `query`, and optionally `target`,
    /// `max_tier`, `output_schema`, `[phase.budget]`.
    file: PathBuf,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    id: Option<Uuid>,
    #[serde(default)]
    phase: Vec<PhaseFile>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct PhaseFile {
    name: String,
    query: String,
    target: Option<String>,
    max_tier: Option<u32>,
    output_schema: Option<toml::Value>,
    budget: Option<FileBudget>,
}

/// `text` with `{previous}` (the previous value as JSON) and
/// `{previous.KEY}` (one field: a string as it is, anything else as JSON);
/// a key the previous value lacks is an error naming it (for `phase`).
fn fill(text: &str, previous: Option<&RunResult>, phase: &str) -> Result<String, String> {
    let value = previous.and_then(|r| r.value.clone()).unwrap_or_default();
    let mut out = text.replace("{previous}", &Value::Object(value.clone()).to_string());
    let mut from = 0;
    while let Some(at) = out[from..].find("{previous.") {
        let start = from + at;
        let Some(len) = out[start..].find('}') else { break };
        let key = &out[start + "{previous.".len()..start + len];
        let field = match value.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => {
                let has: Vec<&str> = value.keys().map(String::as_str).collect();
                return Err(format!(
                    "phase {phase:?} uses {{previous.{key}}}, but the previous phase's value has no {key:?} (it has: {})",
                    if has.is_empty() { "nothing".to_owned() } else { has.join(", ") }
                ));
            }
        };
        out.replace_range(start..start + len + 1, &field);
        from = start + field.len();
    }
    Ok(out)
}

fn spec_of(phase: &PhaseFile, base: &TaskSpec, previous: Option<&RunResult>) -> Result<TaskSpec, String> {
    let mut spec = TaskSpec::new(fill(&phase.query, previous, &phase.name)?);
    spec.target = phase
        .target
        .as_deref()
        .map(|t| fill(t, previous, &phase.name))
        .transpose()?;
    spec.max_tier = phase.max_tier.unwrap_or(base.max_tier);
    spec.output_schema = phase.output_schema.clone().map_or_else(|| json!({}), to_json);
    let b = phase.budget.as_ref();
    let d = &base.budget;
    spec.budget = Budget {
        max_steps: b.and_then(|b| b.max_steps).unwrap_or(d.max_steps),
        max_tokens: b.and_then(|b| b.max_tokens).unwrap_or(d.max_tokens),
        wall_time_s: b.and_then(|b| b.wall_time_s).unwrap_or(d.wall_time_s),
        max_tool_calls: b.and_then(|b| b.max_tool_calls).unwrap_or(d.max_tool_calls),
    };
    Ok(spec)
}

/// Before anything runs: the first phase has no previous value, and a key
/// the previous phase's output schema lists no property for is a mistake.
fn check_uses(path: &std::path::Path, phases: &[PhaseFile]) -> Result<(), Failure> {
    for (i, p) in phases.iter().enumerate() {
        let text = format!("{} {}", p.query, p.target.as_deref().unwrap_or(""));
        if i == 0 && text.contains("{previous") {
            return Err(Failure::usage(format!(
                "{}: phase {:?} is the first: it has no previous value to use",
                path.display(),
                p.name
            )));
        }
        let Some(before) = i.checked_sub(1).map(|j| &phases[j]) else {
            continue;
        };
        let properties = before
            .output_schema
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(|p| p.as_table());
        let Some(properties) = properties else { continue };
        for used in text.split("{previous.").skip(1).filter_map(|rest| rest.split_once('}')) {
            if !properties.contains_key(used.0) {
                return Err(Failure::usage(format!(
                    "{}: phase {:?} uses {{previous.{}}}, but phase {:?}'s output_schema has no such property (it has: {})",
                    path.display(),
                    p.name,
                    used.0,
                    before.name,
                    properties.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    Ok(())
}

fn read(path: &std::path::Path) -> Result<(Uuid, Vec<PhaseFile>), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read pipeline {}: {e}", path.display())))?;
    let file: PipelineFile = toml::from_str(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    if file.phase.is_empty() {
        return Err(Failure::usage(format!(
            "{}: no phases; add [[phase]] tables with name and query",
            path.display()
        )));
    }
    let mut names = std::collections::BTreeSet::new();
    for p in &file.phase {
        if p.name.trim().is_empty() || !names.insert(p.name.clone()) {
            return Err(Failure::usage(format!(
                "{}: phase names must be non-empty and unique (they key resume); {:?} is not",
                path.display(),
                p.name
            )));
        }
    }
    let id = match file.id {
        Some(id) => id,
        None => {
            let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            Uuid::new_v5(&Uuid::NAMESPACE_URL, abs.to_string_lossy().as_bytes())
        }
    };
    check_uses(path, &file.phase)?;
    Ok((id, file.phase))
}

pub fn run(args: PipelineArgs) -> Result<u8, Failure> {
    let (id, phase_files) = read(&args.file)?;
    let plan = plan(args.run, Query::Optional)?;
    if !plan.spec.query.is_empty() || plan.resume.is_some() {
        return Err(Failure::usage(
            "zu pipeline takes its tasks from the pipeline file: drop --query/--task/--resume",
        ));
    }
    let p = prepare(&plan, None)?;
    let base = Arc::new(plan.spec.clone());
    let phases: Vec<PipelinePhase> = phase_files
        .into_iter()
        .map(|f| {
            let base = base.clone();
            PipelinePhase {
                name: f.name.clone(),
                build: Box::new(move |prev| spec_of(&f, &base, prev)),
            }
        })
        .collect();
    let outcome = run_pipeline(
        &phases,
        p.provider.clone(),
        &p.loaded.registry,
        &p.bus,
        &p.options,
        Some(id),
    );
    p.bus.close();
    let out = outcome.map_err(|e| Failure::failed(e.to_string()))?;
    let phases: Vec<Value> = out
        .phases
        .iter()
        .map(|(name, r)| json!({"name": name, "status": r.status, "reason": r.reason, "skipped": out.skipped.contains(name)}))
        .collect();
    let report = json!({"id": out.id, "status": out.status, "value": out.value, "failed_phase": out.failed_phase, "phases": phases});
    let text = serde_json::to_string_pretty(&report).expect("plain data");
    crate::outln!("{}", zu_runtime::display::json(&text));
    eprintln!(
        "zu: pipeline {} ended {:?} ({} phases, {} skipped as already complete)",
        out.id,
        out.status,
        out.phases.len(),
        out.skipped.len()
    );
    Ok(exit_code(&p.interrupts, out.status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zu_plugin_api::contracts::Status;

    #[test]
    fn a_phase_uses_the_previous_value_whole_or_by_key() {
        let prev = RunResult {
            status: Status::Success,
            value: json!({"url": "https://a.test", "n": 3}).as_object().cloned(),
            reason: None,
        };
        assert_eq!(
            fill("open {previous.url} ({previous.n})", Some(&prev), "p").unwrap(),
            "open https://a.test (3)"
        );
        assert_eq!(
            fill("{previous}", Some(&prev), "p").unwrap(),
            r#"{"n":3,"url":"https://a.test"}"#
        );
        let e = fill("x {previous.missing} y", Some(&prev), "read").unwrap_err();
        assert!(
            e.contains("phase \"read\" uses {previous.missing}") && e.contains("it has: n, url"),
            "{e}"
        );
        assert_eq!(fill("first", None, "p").unwrap(), "first");
    }
}
