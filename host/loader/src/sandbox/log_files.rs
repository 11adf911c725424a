//! A sink's own log files: the files a sink's process writes instead of a
//! directory (Landlock names a file only once it exists, so they are made
//! when the process starts, before its sandbox), with an SQLite log's
//! companions (`-wal`, `-shm`; a `-journal` that is there).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::fence::{looks_like_path, real};

/// The files a sink's config names under a path key (`path`, `file`,
/// `*_path`, `*_file`) that are not directories, resolved against `cwd`,
/// and the directories named there (a sink that keeps a directory of logs).
pub(super) fn named(config: &Value, cwd: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(config, cwd, &mut files, &mut dirs);
    (files, dirs)
}

fn walk(config: &Value, cwd: &Path, files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) {
    let Value::Object(map) = config else { return };
    for (key, value) in map {
        match value {
            Value::String(s) if is_path_key(key) && looks_like_path(s) => {
                let p = real(&cwd.join(s));
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    files.push(p);
                }
            }
            Value::Object(_) => walk(value, cwd, files, dirs),
            _ => {}
        }
    }
}

fn is_path_key(key: &str) -> bool {
    matches!(key, "path" | "file") || key.ends_with("_path") || key.ends_with("_file")
}

/// `log` with `suffix` appended to its name (`run.db` → `run.db-wal`).
pub(super) fn companion(log: &Path, suffix: &str) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A file a sink's process gets rights on: held open (`O_PATH`, never
/// through a link), so the rule is on what was checked, and whether it may
/// write it.
pub(crate) struct LogFile {
    pub fd: std::os::fd::OwnedFd,
    pub write: bool,
}

/// In the sandboxed process, before its sandbox: when `make_them` (a
/// writer), makes each log that is not there yet (and its directories), and
/// a WAL-mode SQLite log's `-wal` and `-shm` (a database in WAL mode, or an
/// empty log not named like a text log, which the sink will make one);
/// answers the files that are there, each only if it is a regular file of
/// this user's with one name (a link planted beside a log, or a hard link to
/// another file, gets no rights). A reader writes only an SQLite log's
/// shared index (`-shm`).
pub(crate) fn prepare(logs: &[PathBuf], make_them: bool) -> Vec<LogFile> {
    let mut out = Vec::new();
    for log in logs {
        if make_them {
            if let Some(parent) = log.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let _ = make(log);
        }
        let Some(fd) = held(log) else { continue };
        if make_them && wal_mode(log) {
            for suffix in ["-wal", "-shm"] {
                let _ = make(&companion(log, suffix));
            }
        }
        out.push(LogFile { fd, write: make_them });
        for suffix in ["-wal", "-shm", "-journal"] {
            if let Some(fd) = held(&companion(log, suffix)) {
                out.push(LogFile {
                    fd,
                    write: make_them || suffix == "-shm",
                });
            }
        }
    }
    out
}

/// `path` opened `O_PATH|O_NOFOLLOW`, if it is a regular file owned by this
/// user with no other name.
fn held(path: &Path) -> Option<std::os::fd::OwnedFd> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let m = file.metadata().ok()?;
    // SAFETY: geteuid takes nothing and cannot fail.
    let me = unsafe { libc::geteuid() };
    (m.file_type().is_file() && m.nlink() == 1 && m.uid() == me).then(|| file.into())
}

/// Makes `path` empty if it is not there (never through a link).
fn make(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        // Never through a link; a FIFO planted there does not block.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map(drop)
}

/// Whether `log` is an SQLite database in WAL mode (its header's write and
/// read versions are 2), or is empty and not named like a text log
/// (`.jsonl`, `.ndjson`, `.json`, `.log`, `.txt`, `.csv`). A database in
/// rollback mode (another program's) gets no companions.
fn wal_mode(log: &Path) -> bool {
    let mut head = [0u8; 20];
    let Ok(mut file) = std::fs::File::open(log) else {
        return false;
    };
    match file.read(&mut head) {
        Ok(0) => !log.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            ["jsonl", "ndjson", "json", "log", "txt", "csv"].contains(&e.to_ascii_lowercase().as_str())
        }),
        Ok(20) => head.starts_with(b"SQLite format 3\0") && head[18] == 2 && head[19] == 2,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_sinks_log_is_named_under_a_path_key_and_made_with_its_companions() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        std::fs::create_dir(cwd.join("logs")).unwrap();
        let config = json!({"path": "new/run.db", "model": "gpt-4.1", "out": {"log_file": "events.jsonl"}, "archive_path": "./logs"});
        let (files, dirs) = named(&config, &cwd);
        // (A config's keys are walked in order.)
        assert_eq!(files, vec![cwd.join("events.jsonl"), cwd.join("new/run.db")]);
        assert_eq!(dirs, vec![cwd.join("logs")], "a version-like value is no path");
        let made = names(prepare(&files, true));
        assert_eq!(
            made,
            vec![
                cwd.join("events.jsonl"),
                cwd.join("new/run.db"),
                cwd.join("new/run.db-wal"),
                cwd.join("new/run.db-shm"),
            ],
            "a text log gets no companions"
        );
        // A JSONL log with lines in it stays one file.
        std::fs::remove_file(cwd.join("events.jsonl")).unwrap();
        std::fs::write(cwd.join("events.jsonl"), "{}\n").unwrap();
        std::fs::write(cwd.join("other.db"), "{}\n").unwrap();
        assert_eq!(
            names(prepare(&[cwd.join("other.db")], true)),
            vec![cwd.join("other.db")],
            "not SQLite"
        );
        // A database in rollback mode: another program's, left as it is.
        let legacy = cwd.join("theirs.db");
        let mut head = b"SQLite format 3\0".to_vec();
        head.extend([16, 0, 1, 1]);
        std::fs::write(&legacy, &head).unwrap();
        assert_eq!(
            names(prepare(std::slice::from_ref(&legacy), true)),
            vec![legacy.clone()]
        );
        head[18..20].copy_from_slice(&[2, 2]);
        std::fs::write(&legacy, &head).unwrap();
        assert_eq!(
            prepare(std::slice::from_ref(&legacy), true).len(),
            3,
            "in WAL mode: with -wal and -shm"
        );
        // A link planted as a companion, or a hard link as the log, gets nothing.
        let victim = cwd.join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::remove_file(cwd.join("theirs.db-wal")).unwrap();
        std::os::unix::fs::symlink(&victim, cwd.join("theirs.db-wal")).unwrap();
        let held = names(prepare(std::slice::from_ref(&legacy), true));
        assert!(!held.contains(&cwd.join("theirs.db-wal")), "{held:?}");
        std::fs::hard_link(&victim, cwd.join("hard.db")).unwrap();
        assert!(prepare(&[cwd.join("hard.db")], true).is_empty());
        // A reader writes the shared index only.
        let reader = prepare(std::slice::from_ref(&legacy), false);
        assert_eq!(reader.iter().filter(|f| f.write).count(), 1, "-shm only");
    }

    /// The paths of `held` files (from their descriptors).
    fn names(held: Vec<LogFile>) -> Vec<PathBuf> {
        use std::os::fd::AsRawFd;
        held.iter()
            .map(|f| std::fs::read_link(format!("/proc/self/fd/{}", f.fd.as_raw_fd())).unwrap())
            .collect()
    }
}
