//! What the model reads of observations and of its history: an observation's
//! content fields over `max_observation_chars` become a pointer to the log
//! (`truncate`) or what the model pulled out of each chunk (`extract`); a
//! history over `max_context_chars` elides old observations, newest kept.

use std::sync::Arc;

use serde_json::{json, Value};
use zu_plugin_api::contracts::JsonObject;
use zu_plugin_api::events::{self as ev, CONTENT_KEYS};
use zu_plugin_api::ports::{ModelProvider, ModelRequest, ModelResponse, PluginError};

use super::budget::{check_usage, usage_tokens};
use super::steps::{Called, Loop, Turn};
use super::RunError;

/// How an observation too large for the model is shaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Replace the content with a pointer to the log (no model call).
    #[default]
    Truncate,
    /// Ask the model, chunk by chunk, for what is relevant to the task.
    Extract,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "truncate" => Ok(Strategy::Truncate),
            "extract" => Ok(Strategy::Extract),
            other => Err(format!(
                "unknown observation strategy {other:?}: expected truncate or extract"
            )),
        }
    }
}

/// What the model may read: per observation and for the whole history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shaping {
    /// Content fields longer than this (in characters) are shaped.
    pub max_observation_chars: Option<usize>,
    /// How they are shaped.
    pub strategy: Strategy,
    /// The history is kept under this many characters of content.
    pub max_context_chars: Option<usize>,
}

/// At most this many chunks of one field are sent for extraction.
pub(super) const MAX_EXTRACT_CHUNKS: usize = 16;
/// How many of the latest observations a bounded history keeps whole.
const KEEP_RECENT: usize = 3;

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The content fields of `obs` longer than `max` characters.
pub(super) fn oversized(obs: &JsonObject, max: Option<usize>) -> Vec<&'static str> {
    let Some(max) = max else { return Vec::new() };
    CONTENT_KEYS
        .into_iter()
        .filter(|k| {
            obs.get(*k)
                .and_then(Value::as_str)
                .is_some_and(|v| v.len() > max && chars(v) > max)
        })
        .collect()
}

/// `truncate`: each oversized field becomes a pointer to the log.
pub(super) fn truncated(obs: &JsonObject, max: Option<usize>) -> Option<JsonObject> {
    let keys = oversized(obs, max);
    if keys.is_empty() {
        return None;
    }
    let mut out = obs.clone();
    for k in keys {
        let n = chars(out[k].as_str().unwrap_or_default());
        out[k] = format!(
            "[{n} chars of retrieved content elided to keep the context lean — it is on the run log; use recall(<keyword>) to read the part you need]"
        )
        .into();
    }
    Some(out)
}

/// One extraction job: a field's chunks and the request for each.
pub(super) struct ExtractJob {
    pub(super) key: &'static str,
    pub(super) requests: Vec<ModelRequest>,
    /// Chunks past [`MAX_EXTRACT_CHUNKS`] that were not sent.
    pub(super) dropped: usize,
}

/// The extraction requests for each oversized field of `obs`.
pub(super) fn extract_jobs(obs: &JsonObject, max: usize, query: &str) -> Vec<ExtractJob> {
    oversized(obs, Some(max))
        .into_iter()
        .map(|key| {
            let text: Vec<char> = obs[key].as_str().unwrap_or_default().chars().collect();
            let chunks: Vec<String> = text.chunks(max.max(1)).map(|c| c.iter().collect()).collect();
            let dropped = chunks.len().saturating_sub(MAX_EXTRACT_CHUNKS);
            let n = chunks.len().min(MAX_EXTRACT_CHUNKS);
            let requests = chunks
                .into_iter()
                .take(MAX_EXTRACT_CHUNKS)
                .enumerate()
                .map(|(i, chunk)| {
                    let mut r = ModelRequest::default();
                    r.messages = vec![json!({"role": "user", "content": extract_prompt(query, i + 1, n, &chunk)})];
                    r
                })
                .collect();
            ExtractJob { key, requests, dropped }
        })
        .collect()
}

fn extract_prompt(query: &str, i: usize, n: usize, chunk: &str) -> String {
    let task = if query.is_empty() { "(no specific task)" } else { query };
    format!(
        "Below is part {i} of {n} of a document too large to read whole. The task it may help with:\n{task}\n\n\
         Part {i} of {n}:\n{chunk}\n\n\
         Copy out, word for word, only what in this part bears on the task: exact values (dates, times, \
         prices, names, URLs) with the text around them. Leave out navigation, ads, scripts and boilerplate. \
         If nothing here bears on the task, answer exactly: NOTHING"
    )
}

/// The text that replaces a field: what the answers pulled out, joined, and
/// capped at `max` characters.
pub(super) fn combine(answers: &[Result<ModelResponse, PluginError>], dropped: usize, max: usize) -> String {
    let parts: Vec<&str> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok()?.text.as_deref())
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("NOTHING"))
        .collect();
    let mut out = if parts.is_empty() {
        "(no content relevant to the task was found)".to_owned()
    } else {
        parts.join("\n\n")
    };
    if dropped > 0 {
        out.push_str(&format!("\n…[{dropped} further chunk(s) were not scanned]"));
    }
    if chars(&out) > max {
        out = out.chars().take(max).collect::<String>() + "\n…[extract truncated]";
    }
    out
}

/// Each job's answers, in order; a job's list stops short where the token
/// allowance ran out.
pub(super) type Answers = Vec<Vec<Result<ModelResponse, PluginError>>>;

/// Makes the extraction calls of `jobs` in order, until their usage reaches
/// `allowance` tokens (what the run's token budget has left); each request
/// carries the time left until `deadline`.
pub(super) fn extract(
    provider: &dyn ModelProvider,
    jobs: &[ExtractJob],
    allowance: u64,
    deadline: std::time::Instant,
) -> Answers {
    let mut used = 0;
    jobs.iter()
        .map(|job| {
            let mut answers = Vec::new();
            for request in &job.requests {
                if used >= allowance {
                    break;
                }
                let mut request = request.clone();
                request.time_left_ms = Some(
                    deadline
                        .saturating_duration_since(std::time::Instant::now())
                        .as_millis() as u64,
                );
                let answer = provider.complete(&request);
                if let Ok(r) = &answer {
                    used += usage_tokens(&r.usage);
                }
                answers.push(answer);
            }
            answers
        })
        .collect()
}

impl Loop {
    /// Records each extraction call (`observation.extracted`), counts its
    /// tokens and dollars, and hands the model the shaped observation; the
    /// detectors still see the observation as the tool returned it.
    pub(super) fn after_extract(
        &mut self,
        turn: Turn,
        i: usize,
        obs: Arc<JsonObject>,
        jobs: &[ExtractJob],
        answers: Called<Answers>,
        model: Option<String>,
    ) -> Result<(), RunError> {
        let name = turn.response.tool_calls[i].name.clone();
        let max = self.shaping.max_observation_chars.unwrap_or(usize::MAX);
        let mut shaped = (*obs).clone();
        let answers = match answers {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return self.extract_failed(turn, i, &obs, e.to_string(), model),
            Err(e) => return self.extract_failed(turn, i, &obs, e.to_string(), model),
        };
        for (job, got) in jobs.iter().zip(&answers) {
            for (chunk, answer) in got.iter().enumerate() {
                let mut payload =
                    json!({"tool": name, "key": job.key, "chunk": chunk + 1, "of": job.requests.len(), "model": model});
                match answer {
                    Ok(r) => match check_usage(&r.usage) {
                        Ok(()) => {
                            self.tokens += usage_tokens(&r.usage);
                            self.spend.add(model.as_deref(), &r.usage);
                            payload["usage"] = Value::Object(r.usage.clone());
                        }
                        Err(why) => payload["error"] = why.into(),
                    },
                    Err(e) => payload["error"] = e.to_string().into(),
                }
                self.record
                    .emit(ev::OBSERVATION_EXTRACTED, &payload, Some(turn.id), "loop")?;
            }
            let unsent = job.dropped + job.requests.len() - got.len();
            shaped[job.key] = combine(got, unsent, max).into();
        }
        let content = serde_json::to_string(&shaped).unwrap_or_default();
        self.observed(turn, i, (*obs).clone(), content)
    }

    /// The extraction failed as a whole (timed out, panicked): recorded, and
    /// the model gets the `truncate` shape instead.
    fn extract_failed(
        &mut self,
        turn: Turn,
        i: usize,
        obs: &JsonObject,
        error: String,
        model: Option<String>,
    ) -> Result<(), RunError> {
        let name = &turn.response.tool_calls[i].name;
        let payload = json!({"tool": name, "error": error, "model": model});
        self.record
            .emit(ev::OBSERVATION_EXTRACTED, &payload, Some(turn.id), "loop")?;
        let shaped = truncated(obs, self.shaping.max_observation_chars).unwrap_or_else(|| obs.clone());
        let content = serde_json::to_string(&shaped).unwrap_or_default();
        self.observed(turn, i, obs.clone(), content)
    }
}

fn content_chars(m: &Value) -> usize {
    m.get("content").and_then(Value::as_str).map_or(0, chars)
}

/// Keeps `messages` within `max` characters of content by eliding old tool
/// results (all but the latest three; the system prompt, the task and the
/// model's own turns stay). Returns the index of the first message changed.
pub(super) fn bound_history(messages: &mut [Value], max: Option<usize>) -> Option<usize> {
    let max = max?;
    let mut total: usize = messages.iter().map(content_chars).sum();
    if total <= max {
        return None;
    }
    let tools: Vec<usize> = (0..messages.len()).filter(|&i| messages[i]["role"] == "tool").collect();
    let elidable = &tools[..tools.len().saturating_sub(KEEP_RECENT)];
    let mut first = None;
    for &i in elidable {
        let n = content_chars(&messages[i]);
        let content = messages[i]["content"].as_str().unwrap_or_default();
        if n <= 200 || content.starts_with("[elided") {
            continue;
        }
        let name = messages[i]
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("tool")
            .to_owned();
        messages[i]["content"] = format!(
            "[elided {n} chars of an earlier {name} result to fit the context window — still on the run log; use recall(<keyword>) to retrieve it]"
        )
        .into();
        first.get_or_insert(i);
        total -= n;
        if total <= max {
            break;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn truncate_points_at_the_log_and_leaves_small_fields() {
        let obs = o(json!({"html": "x".repeat(50), "text": "short", "status": 200}));
        let t = truncated(&obs, Some(10)).unwrap();
        assert!(t["html"]
            .as_str()
            .unwrap()
            .starts_with("[50 chars of retrieved content elided"));
        assert_eq!(t["text"], "short");
        assert!(truncated(&obs, Some(50)).is_none());
        assert!(truncated(&obs, None).is_none());
    }

    #[test]
    fn extraction_chunks_by_characters_caps_the_chunks_and_the_result() {
        let obs = o(json!({"content": "é".repeat(25)}));
        let jobs = extract_jobs(&obs, 10, "q");
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].requests.len(), 3);
        let big = o(json!({"text": "a".repeat(200)}));
        let jobs = extract_jobs(&big, 10, "q");
        assert_eq!((jobs[0].requests.len(), jobs[0].dropped), (MAX_EXTRACT_CHUNKS, 4));
        let answer = |t: &str| {
            Ok(ModelResponse {
                text: Some(t.into()),
                ..Default::default()
            })
        };
        let got = combine(
            &[answer("NOTHING"), answer("price 3"), Err(PluginError::failed("x"))],
            0,
            100,
        );
        assert_eq!(got, "price 3");
        assert!(combine(&[answer("nothing")], 2, 100).contains("2 further chunk(s)"));
        assert!(combine(&[answer(&"z".repeat(50))], 0, 10).ends_with("[extract truncated]"));
    }

    #[test]
    fn a_bounded_history_elides_old_results_first_and_keeps_the_recent_three() {
        let tool = |n: usize| json!({"role": "tool", "name": "fetch", "content": "y".repeat(n)});
        let mut m = vec![
            json!({"role": "system", "content": "s"}),
            json!({"role": "user", "content": "q"}),
        ];
        m.extend((0..5).map(|_| tool(300)));
        assert_eq!(bound_history(&mut m.clone(), Some(10_000)), None);
        let first = bound_history(&mut m, Some(1000)).unwrap();
        assert_eq!(first, 2);
        assert!(m[2]["content"]
            .as_str()
            .unwrap()
            .starts_with("[elided 300 chars of an earlier fetch"));
        assert!(m[3]["content"].as_str().unwrap().starts_with("[elided"));
        assert_eq!(m[4]["content"].as_str().unwrap().len(), 300, "the recent three stay");
        assert_eq!(bound_history(&mut m, Some(1000)), None, "already elided");
    }
}
