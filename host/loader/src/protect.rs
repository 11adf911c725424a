//! What a protected loader adds: the settings (the helper binary, the probe
//! deadline, the cache, isolation by default and per plugin), and the step
//! that judges a batch of libraries — cached verdicts first, then a private
//! copy and a probe for the rest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zu_plugin_api::version::Kind;
use zu_runtime::LoadError;

use crate::cache::{Identity, VerdictCache};
use crate::isolate::Supervisor;
use crate::probe::Prober;
use crate::sandbox::Policy;
use crate::verdict::Verdict;
use crate::{Candidate, Judged};

/// Where a plugin runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// In the host: nanoseconds per call; a crash is the host's crash.
    InProcess,
    /// In a process of its own (one per library): microseconds per call; a
    /// crash, an `exit` or an overrun is an error value and a fresh process.
    #[default]
    Process,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "in-process" => Ok(Isolation::InProcess),
            "process" => Ok(Isolation::Process),
            other => Err(format!("unknown isolation {other:?}: expected in-process or process")),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::InProcess => "in-process",
            Isolation::Process => "process",
        })
    }
}

/// The settings of a protected loader.
#[derive(Debug, Clone)]
pub struct Protection {
    /// The binary that serves `__probe` and `__serve` (zu itself).
    pub helper: PathBuf,
    /// The deadline for opening one library, and for a constructor.
    pub probe_timeout: Duration,
    /// The verdict cache's directory (`None`: [`crate::cache::default_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Where plugins run unless named in `isolate`.
    pub isolation: Isolation,
    /// Where particular plugins run.
    pub isolate: HashMap<(Kind, String), Isolation>,
    /// Forget every cached verdict first (probe everything again).
    pub rescan: bool,
    /// What particular plugins are granted beyond their default sandbox.
    pub grants: HashMap<(Kind, String), crate::sandbox::Grant>,
    /// Files no plugin reads: the settings file (no owner: zu.toml) and the
    /// run's log, which only the sink named with it reads and writes beside.
    pub private_files: Vec<(PathBuf, Option<(Kind, String)>)>,
    /// Plugin processes run in their sandbox (default). `false` only for
    /// measuring what the sandbox costs (`zu-bench`); `zu` never sets it.
    pub sandbox: bool,
}

impl Protection {
    /// Defaults: a 10 s probe, the user's cache, every plugin in a process.
    pub fn new(helper: &Path) -> Self {
        Protection {
            helper: helper.to_owned(),
            probe_timeout: crate::probe::DEFAULT_TIMEOUT,
            cache_dir: None,
            isolation: Isolation::Process,
            isolate: HashMap::new(),
            rescan: false,
            grants: HashMap::new(),
            private_files: Vec::new(),
            sandbox: true,
        }
    }

    /// The private files, whoever they belong to (what an MCP server, which
    /// owns none, may not read).
    pub fn private_paths(&self) -> Vec<PathBuf> {
        self.private_files.iter().map(|(f, _)| f.clone()).collect()
    }
}

/// A protected loader's state.
pub(crate) struct Protected {
    settings: Protection,
    cache: Option<VerdictCache>,
}

impl Protected {
    pub(crate) fn new(settings: Protection) -> Self {
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let tmp = std::env::temp_dir();
        let choices = [
            settings.cache_dir.clone().or_else(crate::cache::default_dir),
            Some(tmp.join(format!("zu-{uid}"))),
            Some(tmp.join(format!("zu-{uid}-{}", std::process::id()))),
        ];
        let mut cache = None;
        for dir in choices.into_iter().flatten() {
            match VerdictCache::open(&dir) {
                Ok(c) => {
                    cache = Some(c);
                    break;
                }
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot use this verdict cache directory"),
            }
        }
        if settings.rescan {
            if let Some(Err(e)) = cache.as_mut().map(VerdictCache::forget) {
                tracing::warn!(error = %e, "cannot clear the verdict cache");
            }
        }
        Protected { settings, cache }
    }

    pub(crate) fn forget(&mut self) -> std::io::Result<()> {
        match &mut self.cache {
            Some(c) => c.forget(),
            None => Ok(()),
        }
    }

    pub(crate) fn isolation_of(&self, kind: Kind, name: &str) -> Isolation {
        self.settings
            .isolate
            .get(&(kind, name.to_owned()))
            .copied()
            .unwrap_or(self.settings.isolation)
    }

    /// What no plugin of `library` may write: the verdict cache, the
    /// library's directory, the home directory.
    pub(crate) fn protected_paths(&self, library: &Path) -> Vec<PathBuf> {
        let dirs: Vec<PathBuf> = library.parent().map(Path::to_path_buf).into_iter().collect();
        crate::sandbox::protected_paths(self.cache.as_ref().map(|c| c.dir()), &dirs)
    }

    /// The sandbox of the plugin `info` with `config`, run in `cwd`: its
    /// grant, kept from `protected` and from the private files not its own.
    pub(crate) fn policy(
        &self,
        info: &zu_runtime::PluginInfo,
        config: &serde_json::Value,
        cwd: &Path,
        protected: &[PathBuf],
    ) -> Result<Policy, crate::sandbox::GrantTooWide> {
        let key = (info.kind, info.name.clone());
        let (mut settings, mut logs) = (Vec::new(), Vec::new());
        for (file, owner) in &self.settings.private_files {
            match owner {
                None => settings.push(file.clone()),
                Some(o) if *o != key => logs.push(file.clone()),
                Some(_) => {}
            }
        }
        let fence = crate::sandbox::Fence {
            protected,
            settings: &settings,
            logs: &logs,
        };
        Policy::for_plugin(info, config, cwd, self.settings.grants.get(&key), &fence)
    }

    pub(crate) fn supervisor(&self, file: &Path, display: &Path, policy: Policy) -> Arc<Supervisor> {
        Arc::new(Supervisor::new(
            &self.settings.helper,
            file,
            display,
            self.settings.probe_timeout,
            self.settings.sandbox.then_some(policy),
        ))
    }

    /// A private copy of the candidate, its identity and the SHA-256 of its
    /// bytes (taken again if the file changes while it is copied).
    fn copy(&self, candidate: &Candidate) -> Result<(Identity, PathBuf, String), String> {
        let cache = self.cache.as_ref().ok_or("no cache directory for private copies")?;
        for _ in 0..3 {
            let identity = Identity::of(&candidate.real).map_err(|e| e.to_string())?;
            if let Some((copy, sha256)) = cache.copy(&candidate.real, &identity).map_err(|e| e.to_string())? {
                return Ok((identity, copy, sha256));
            }
        }
        Err("it kept changing while it was copied".into())
    }

    /// The verdict of each candidate, in order: from the cache (by the file,
    /// else by the bytes of its private copy), else from a probe of the copy
    /// (one probe child for all of them).
    pub(crate) fn judge(&mut self, candidates: &[Candidate]) -> Vec<Judged> {
        let mut judged: Vec<Option<Judged>> = Vec::with_capacity(candidates.len());
        let mut to_probe = Vec::new();
        let mut store = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            let hit = Identity::of(&c.real).ok().and_then(|id| self.cache.as_ref()?.get(&id));
            match hit {
                Some((verdict, probed_as, copy)) => judged.push(Some(Judged {
                    verdict: relabel(verdict, &probed_as, &c.path),
                    file: copy,
                    opened: None,
                    from_cache: true,
                })),
                None => {
                    judged.push(None);
                    match self.copy(c) {
                        Ok((identity, copy, sha256)) => {
                            match self.cache.as_ref().and_then(|k| k.verdict_of_bytes(&sha256)) {
                                Some((verdict, probed_as)) => {
                                    judged[i] = Some(Judged {
                                        verdict: relabel(verdict.clone(), &probed_as, &c.path),
                                        file: copy,
                                        opened: None,
                                        from_cache: true,
                                    });
                                    store.push((identity, c.path.clone(), verdict, sha256));
                                }
                                None => to_probe.push((i, identity, copy, sha256)),
                            }
                        }
                        Err(reason) => {
                            judged[i] = Some(refused(
                                LoadError::NotALibrary {
                                    library: c.path.clone(),
                                    reason: format!("cannot take a private copy to probe: {reason}"),
                                },
                                &c.real,
                            ))
                        }
                    }
                }
            }
        }
        if !to_probe.is_empty() {
            let jobs: Vec<(PathBuf, PathBuf)> = to_probe
                .iter()
                .map(|(i, _, copy, _)| (copy.clone(), candidates[*i].path.clone()))
                .collect();
            let prober = Prober::new(&self.settings.helper, self.settings.probe_timeout);
            match prober.probe(&jobs) {
                Ok(verdicts) => {
                    for ((i, identity, copy, sha256), verdict) in to_probe.into_iter().zip(verdicts) {
                        // Only if the copy still holds what was probed.
                        if crate::cache::sha256_of(&copy).is_ok_and(|now| now == sha256) {
                            store.push((identity, candidates[i].path.clone(), verdict.clone(), sha256));
                        }
                        judged[i] = Some(Judged {
                            verdict,
                            file: copy,
                            opened: None,
                            from_cache: false,
                        });
                    }
                }
                Err(unavailable) => {
                    for (i, _, copy, _) in to_probe {
                        let e = LoadError::NotALibrary {
                            library: candidates[i].path.clone(),
                            reason: unavailable.to_string(),
                        };
                        judged[i] = Some(refused(e, &copy));
                    }
                }
            }
        }
        if let Some(cache) = &mut self.cache {
            if let Err(e) = cache.store(store) {
                tracing::warn!(error = %e, "cannot write the verdict cache; the next start probes again");
            }
        }
        judged.into_iter().map(|j| j.expect("every candidate judged")).collect()
    }
}

fn refused(e: LoadError, file: &Path) -> Judged {
    Judged {
        verdict: Verdict::Refused(e),
        file: file.to_owned(),
        opened: None,
        from_cache: false,
    }
}

/// A cached verdict names the path the library was probed under; the same
/// file may now be reached by another path (another directory, a symlink).
fn relabel(verdict: Verdict, probed_as: &Path, path: &Path) -> Verdict {
    if probed_as == path {
        return verdict;
    }
    let quoted = |p: &Path| serde_json::to_string(&p.display().to_string()).expect("a string");
    let text = serde_json::to_string(&verdict).expect("a verdict is plain data");
    serde_json::from_str(&text.replace(&quoted(probed_as), &quoted(path))).unwrap_or(verdict)
}
