//! The probe: libraries the host has not vouched for are opened first in a
//! child process (the host's own binary, a hidden subcommand), one child per
//! library — so a library's load-time code cannot answer for another — each
//! under a deadline. A child that dies, exits, answers garbage or overruns
//! costs only its library: a `probe_*` refusal.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zu_runtime::LoadError;

use crate::checks::LayoutCache;
use crate::pipe::{self, Ended, HelperChild, ReadError};
use crate::sandbox::Policy;
use crate::verdict::{self, Verdict};

/// The hidden subcommand that runs [`child_main`].
pub const PROBE_COMMAND: &str = "__probe";

/// The default deadline for opening one library (and for a constructor).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One library to probe: the file to open, and the path to name in messages.
#[derive(Serialize, Deserialize)]
struct Request {
    file: PathBuf,
    display: PathBuf,
}

/// The body of `zu __probe`: reads requests on stdin (as frames), opens each
/// library, answers its verdict on stdout. Whatever the libraries print goes
/// to stderr, never into the answers.
pub fn child_main() -> i32 {
    // Deny-all: load-time constructors run here, before any envelope is known.
    crate::sandbox::enter(&[]);
    let (mut input, mut output) = pipe::claim_stdio();
    let mut layouts = LayoutCache::default();
    loop {
        let Ok(frame) = input.read(None) else {
            return 0; // the host closed the pipe: done
        };
        let Ok(request) = serde_json::from_slice::<Request>(&frame) else {
            return 2;
        };
        let (verdict, _declarations) = verdict::examine(&mut layouts, &request.file, &request.display);
        let answer = serde_json::to_vec(&verdict).expect("a verdict is plain data");
        if pipe::write_frame(&mut output, &answer).is_err() {
            return 0;
        }
    }
}

static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many probe children this process has started (a warm start: none).
pub fn children_started() -> usize {
    STARTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Probes libraries in helper children.
pub struct Prober {
    exe: PathBuf,
    timeout: Duration,
}

/// Why probing could not happen at all (the helper cannot start).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin probe {}: {source}; zu needs its own binary to probe plugins", exe.display())]
pub struct ProbeUnavailable {
    exe: PathBuf,
    source: std::io::Error,
}

impl Prober {
    /// A prober running `exe __probe`, each library under `timeout`.
    pub fn new(exe: &Path, timeout: Duration) -> Self {
        Prober {
            exe: exe.to_owned(),
            timeout,
        }
    }

    /// A probe child that may read only `files` (and the system paths).
    fn spawn(&self, files: &[PathBuf]) -> Result<HelperChild, ProbeUnavailable> {
        STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let env = crate::sandbox::environment(&Policy::deny_all(files));
        HelperChild::spawn(&self.exe, &[PROBE_COMMAND], None, Some(&env), None).map_err(|source| ProbeUnavailable {
            exe: self.exe.clone(),
            source,
        })
    }

    /// The verdict of each `(file, display)`, in order; each library in a
    /// child of its own, so no library's code can answer for another's.
    pub fn probe(&self, jobs: &[(PathBuf, PathBuf)]) -> Result<Vec<Verdict>, ProbeUnavailable> {
        let mut verdicts = Vec::with_capacity(jobs.len());
        // Their directories: Landlock rules hold inodes, and another zu may
        // put a fresh copy in place (a rename) between the rules and the open.
        let mut files: Vec<PathBuf> = jobs
            .iter()
            .filter_map(|(f, _)| f.parent().map(Path::to_path_buf))
            .collect();
        files.sort();
        files.dedup();
        for (file, display) in jobs {
            let helper = &mut self.spawn(&files)?;
            let library = display.display().to_string();
            let _span = tracing::debug_span!("probe", library, pid = helper.id()).entered();
            let request = serde_json::to_vec(&Request {
                file: file.clone(),
                display: display.clone(),
            })
            .expect("a request is plain data");
            let mark = helper.stderr.mark();
            let sent = helper.send(&request);
            let answer = match sent {
                Ok(()) => helper.output.read(Some(Instant::now() + self.timeout)),
                Err(_) => Err(ReadError::Eof),
            };
            let verdict = match answer {
                Ok(frame) => match serde_json::from_slice::<Verdict>(&frame) {
                    Ok(v) => v,
                    Err(e) => Verdict::Refused(LoadError::ProbeGarbled {
                        library: display.clone(),
                        detail: e.to_string(),
                        quarantined: false,
                    }),
                },
                Err(ReadError::Timeout) => Verdict::Refused(LoadError::ProbeTimeout {
                    library: display.clone(),
                    millis: self.timeout.as_millis() as u64,
                    quarantined: false,
                }),
                Err(ReadError::Eof | ReadError::Bad(_)) => {
                    let ended = helper.end_within(Duration::from_secs(1));
                    let detail = helper.stderr.last_line_since(mark);
                    Verdict::Refused(match ended {
                        Ended::Signal(signal) => LoadError::ProbeCrashed {
                            library: display.clone(),
                            signal,
                            detail,
                            quarantined: false,
                        },
                        Ended::Exit(status) => LoadError::ProbeExited {
                            library: display.clone(),
                            status,
                            detail,
                            quarantined: false,
                        },
                    })
                }
            };
            tracing::debug!(verdict = ?verdict, "probed");
            verdicts.push(verdict);
            // Its answer is in: whatever the library left running there ends.
            helper.kill();
        }
        Ok(verdicts)
    }
}
