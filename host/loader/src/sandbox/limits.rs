//! The resource layer: limits on a sandboxed process's memory (data
//! segment), open files, file size, processes and core dumps, with defaults
//! a plugin can be given more of. Exceeding one fails the plugin's own call (or ends
//! its process), never zu.

use serde::{Deserialize, Serialize};

/// A sandboxed process's resource limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Private writable memory (`RLIMIT_DATA`), MiB.
    pub memory_mb: u64,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// The largest file it may write (`RLIMIT_FSIZE`), MiB.
    pub file_size_mb: u64,
    /// Processes and threads (`RLIMIT_NPROC`), counted in the sandbox's own
    /// user namespace (set only where it has one: elsewhere the count is
    /// every process of the user's).
    pub processes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 2048,
            open_files: 1024,
            file_size_mb: 16 * 1024,
            processes: 256,
        }
    }
}

fn set(resource: libc::__rlimit_resource_t, value: u64) -> bool {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    unsafe { libc::setrlimit(resource, &limit) == 0 }
}

impl Limits {
    /// Sets the limits on this process; false if any could not be set.
    pub fn apply(&self) -> bool {
        let mib = 1024 * 1024;
        [
            set(libc::RLIMIT_DATA, self.memory_mb.saturating_mul(mib)),
            set(libc::RLIMIT_NOFILE, self.open_files),
            set(libc::RLIMIT_FSIZE, self.file_size_mb.saturating_mul(mib)),
            set(libc::RLIMIT_CORE, 0),
        ]
        .iter()
        .all(|ok| *ok)
    }

    /// Sets the process limit; false if it could not be set.
    pub fn apply_processes(&self) -> bool {
        set(libc::RLIMIT_NPROC, self.processes)
    }
}
