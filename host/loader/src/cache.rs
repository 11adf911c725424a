//! The verdict cache and the private copies. A library's verdict is kept
//! under its file's identity (device, inode, size, mtime, ctime) and this
//! host's own version and interface table, so a change on either side looks
//! again. What the host loads is a private copy taken before the probe (so
//! the bytes probed are the bytes loaded, and a `cp` over the original cannot
//! change code a running host has mapped), named by its SHA-256: files with
//! the same bytes share one copy and one probe.
//! Several processes share the cache: writers merge under a lock and replace
//! the file atomically; readers never see a torn file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::verdict::Verdict;

/// The environment variable naming the cache directory.
pub const CACHE_DIR_ENV: &str = "ZU_CACHE_DIR";

/// A file's identity: what changes when anyone rewrites, replaces or
/// touches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    /// The identity of the file at `path` (following symlinks).
    pub fn of(path: &Path) -> std::io::Result<Identity> {
        let m = std::fs::metadata(path)?;
        Ok(Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })
    }

    /// The cache key, also the private copy's file stem.
    pub fn key(&self) -> String {
        format!(
            "{}-{}-{}-{}-{}",
            self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns
        )
    }
}

/// What changes the meaning of every verdict: this loader's version, the
/// plugin API's version and the interface table.
pub fn host_key() -> String {
    format!(
        "zu-loader {} zu-plugin-api {} {:?}",
        env!("CARGO_PKG_VERSION"),
        zu_plugin_api::version::API_VERSION,
        zu_plugin_api::version::INTERFACE_VERSION
    )
}

#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    host: String,
    entries: BTreeMap<String, Entry>,
}

/// One cached verdict.
#[derive(Serialize, Deserialize, Clone)]
struct Entry {
    /// The path it was probed under (for people reading the file).
    path: PathBuf,
    verdict: Verdict,
    /// SHA-256 of the private copy that was probed, taken with the verdict.
    #[serde(default)]
    sha256: Option<String>,
}

/// The SHA-256 of a file's bytes, as hex.
pub fn sha256_of(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The cache directory: its verdicts and its private copies.
pub struct VerdictCache {
    dir: PathBuf,
    host: String,
    entries: BTreeMap<String, Entry>,
}

/// `$ZU_CACHE_DIR`, else `$XDG_CACHE_HOME/zu`, else `$HOME/.cache/zu`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("zu"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/zu"))
}

fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// An exclusive lock on the cache, held while it is rewritten.
struct Lock(#[allow(dead_code)] File); // held for its flock

impl Lock {
    fn take(dir: &Path) -> std::io::Result<Lock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("verdicts.lock"))?;
        // SAFETY: flock on a descriptor we own; released when the file closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Lock(file))
    }
}

impl VerdictCache {
    /// Opens (creating) the cache in `dir`. A cache written by another host
    /// version, or unreadable, counts as empty.
    pub fn open(dir: &Path) -> std::io::Result<VerdictCache> {
        private_dir(dir)?;
        private_dir(&dir.join("libs"))?;
        let host = host_key();
        let entries = Self::read(dir)
            .filter(|f| f.host == host)
            .map(|f| f.entries)
            .unwrap_or_default();
        Ok(VerdictCache {
            dir: dir.to_owned(),
            host,
            entries,
        })
    }

    fn read(dir: &Path) -> Option<CacheFile> {
        let text = std::fs::read(dir.join("verdicts.json")).ok()?;
        match serde_json::from_slice(&text) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "the verdict cache is unreadable; probing again");
                None
            }
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached verdict of a file with `identity`, the path it was probed
    /// under, and its private copy, if all are there and the copy's bytes are
    /// still those the verdict was taken on (its SHA-256). A copy that changed
    /// (or a verdict with no hash, from an older zu) is removed, so the next
    /// private copy is fresh and is probed again.
    pub fn get(&self, identity: &Identity) -> Option<(Verdict, PathBuf, PathBuf)> {
        let entry = self.entries.get(&identity.key())?;
        let sha256 = entry.sha256.as_deref()?;
        let copy = self.copy_path(sha256);
        let has_copy = std::fs::metadata(&copy).is_ok_and(|m| m.len() == identity.size);
        if !has_copy {
            return None;
        }
        if sha256_of(&copy).ok().as_deref() != Some(sha256) {
            tracing::warn!(library = %entry.path.display(), copy = %copy.display(),
                "the private copy changed since it was vouched for; probing a fresh copy");
            let _ = std::fs::remove_file(&copy);
            return None;
        }
        Some((entry.verdict.clone(), entry.path.clone(), copy))
    }

    /// The verdict taken on a copy with these bytes (another file's, or this
    /// file's before it was touched), and the path it was probed under.
    pub fn verdict_of_bytes(&self, sha256: &str) -> Option<(Verdict, PathBuf)> {
        self.entries
            .values()
            .find(|e| e.sha256.as_deref() == Some(sha256))
            .map(|e| (e.verdict.clone(), e.path.clone()))
    }

    fn copy_path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join("libs")
            .join(format!("{sha256}.{}", crate::discovery::LIBRARY_EXTENSION))
    }

    /// A private copy of `original`, whose identity is `identity`, and the
    /// SHA-256 of its bytes; `None` if the file changed while it was copied
    /// (the caller tries again). The copy replaces any with the same name, so
    /// it holds exactly the bytes hashed.
    pub fn copy(&self, original: &Path, identity: &Identity) -> std::io::Result<Option<(PathBuf, String)>> {
        let tmp = self
            .dir
            .join("libs")
            .join(format!("tmp{}-{}.part", std::process::id(), unique()));
        let taken = (|| {
            std::fs::copy(original, &tmp)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o500))?;
            let same = Identity::of(original)? == *identity && std::fs::metadata(&tmp)?.len() == identity.size;
            same.then(|| sha256_of(&tmp)).transpose()
        })();
        let sha256 = match taken {
            Ok(Some(sha256)) => sha256,
            failed => {
                let _ = std::fs::remove_file(&tmp);
                return failed.map(|_| None);
            }
        };
        let target = self.copy_path(&sha256);
        std::fs::rename(&tmp, &target)?;
        Ok(Some((target, sha256)))
    }

    /// Records verdicts, each with the hash of the copy it was taken on
    /// (merged with what other processes wrote meanwhile).
    pub fn store(&mut self, verdicts: Vec<(Identity, PathBuf, Verdict, String)>) -> std::io::Result<()> {
        if verdicts.is_empty() {
            return Ok(());
        }
        let _lock = Lock::take(&self.dir)?;
        let mut file = Self::read(&self.dir)
            .filter(|f| f.host == self.host)
            .unwrap_or_default();
        file.host = self.host.clone();
        for (identity, path, verdict, sha256) in verdicts {
            let entry = Entry {
                path,
                verdict,
                sha256: Some(sha256),
            };
            file.entries.insert(identity.key(), entry.clone());
            self.entries.insert(identity.key(), entry);
        }
        self.prune(&mut file);
        self.write(&file)
    }

    /// Keeps the cache from growing without bound (under the lock): drops
    /// the verdicts of files that are gone or were rewritten since, then the
    /// private copies no verdict names and temporary files left by killed
    /// writers — those only when older than [`STALE`], so another process's
    /// copy made for a verdict it has not stored yet survives. A host that
    /// runs a removed copy keeps its mapping.
    fn prune(&self, file: &mut CacheFile) {
        file.entries
            .retain(|key, e| Identity::of(&e.path).is_ok_and(|id| id.key() == *key));
        let stale = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE))
        };
        let libs = self.dir.join("libs");
        for e in std::fs::read_dir(&libs).into_iter().flatten().flatten() {
            let path = e.path();
            let named = path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|stem| file.entries.values().any(|e| e.sha256.as_deref() == Some(stem)));
            if !named && stale(&path) {
                let _ = std::fs::remove_file(&path);
            }
        }
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let tmp = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("verdicts.json.tmp"));
            if tmp && stale(&e.path()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn write(&self, file: &CacheFile) -> std::io::Result<()> {
        let path = self.dir.join("verdicts.json");
        let tmp = self
            .dir
            .join(format!("verdicts.json.tmp{}-{}", std::process::id(), unique()));
        let mut out = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(&serde_json::to_vec(file).expect("a cache file is plain data"))?;
        out.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Forgets every verdict and private copy (`zu plugins --rescan`).
    pub fn forget(&mut self) -> std::io::Result<()> {
        let _lock = Lock::take(&self.dir)?;
        self.entries.clear();
        self.write(&CacheFile {
            host: self.host.clone(),
            entries: BTreeMap::new(),
        })?;
        for e in std::fs::read_dir(self.dir.join("libs"))?.flatten() {
            let _ = std::fs::remove_file(e.path()); // a running host keeps its mapping
        }
        Ok(())
    }
}

/// How old an unreferenced copy or temporary file must be before it is removed.
const STALE: std::time::Duration = std::time::Duration::from_secs(600);

/// A name no other writer uses at the same time: this process and a counter.
fn unique() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_changes_when_a_file_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.so");
        std::fs::write(&f, b"one").unwrap();
        let a = Identity::of(&f).unwrap();
        assert_eq!(a, Identity::of(&f).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&f, b"two").unwrap();
        assert_ne!(a, Identity::of(&f).unwrap());
    }

    #[test]
    fn verdicts_survive_a_reopen_and_forget_clears_them() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("x.so");
        std::fs::write(&lib, b"not really a library").unwrap();
        let id = Identity::of(&lib).unwrap();
        let mut cache = VerdictCache::open(&dir.path().join("cache")).unwrap();
        let (copy, sha) = cache.copy(&lib, &id).unwrap().unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), b"not really a library");
        assert_eq!(sha, sha256_of(&lib).unwrap());
        let verdict = Verdict::Plugins(Vec::new());
        cache
            .store(vec![(id, lib.clone(), verdict.clone(), sha.clone())])
            .unwrap();
        let again = VerdictCache::open(&dir.path().join("cache")).unwrap();
        assert_eq!(again.get(&id).map(|(v, _, _)| v), Some(verdict.clone()));
        // A copy whose bytes changed (same size: a trojan) is no hit, and is removed.
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(&copy, b"not really a trojan!").unwrap();
        assert!(again.get(&id).is_none());
        assert!(!copy.exists(), "the changed copy is removed, so the next is fresh");
        let (fresh, _) = again.copy(&lib, &id).unwrap().unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), b"not really a library");
        // Another file with the same bytes shares the copy and the verdict.
        let twin = dir.path().join("twin.so");
        std::fs::copy(&lib, &twin).unwrap();
        let (twin_copy, twin_sha) = again.copy(&twin, &Identity::of(&twin).unwrap()).unwrap().unwrap();
        assert_eq!((twin_copy, twin_sha.as_str()), (fresh, sha.as_str()));
        assert_eq!(again.verdict_of_bytes(&sha).map(|(v, _)| v), Some(verdict.clone()));
        assert_eq!(std::fs::read_dir(dir.path().join("cache/libs")).unwrap().count(), 1);
        let mut again = again;
        again.forget().unwrap();
        assert!(VerdictCache::open(&dir.path().join("cache"))
            .unwrap()
            .get(&id)
            .is_none());
    }

    #[test]
    fn verdicts_of_gone_files_and_old_unreferenced_copies_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let mut cache = VerdictCache::open(&cache_dir).unwrap();
        let (gone, kept) = (dir.path().join("gone.so"), dir.path().join("kept.so"));
        std::fs::write(&gone, b"gone").unwrap();
        std::fs::write(&kept, b"kept").unwrap();
        let (g, k) = (Identity::of(&gone).unwrap(), Identity::of(&kept).unwrap());
        let (gone_copy, gone_sha) = cache.copy(&gone, &g).unwrap().unwrap();
        let (kept_copy, kept_sha) = cache.copy(&kept, &k).unwrap().unwrap();
        let v = Verdict::Plugins(Vec::new());
        cache
            .store(vec![
                (g, gone.clone(), v.clone(), gone_sha),
                (k, kept.clone(), v.clone(), kept_sha),
            ])
            .unwrap();
        std::fs::remove_file(&gone).unwrap();
        // An old copy of a file whose verdict is gone, and an old temporary file.
        let old = std::time::SystemTime::now() - 2 * STALE;
        File::open(&gone_copy).unwrap().set_modified(old).unwrap();
        let tmp = cache_dir.join("verdicts.json.tmp1-1");
        std::fs::write(&tmp, b"{").unwrap();
        File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let other = dir.path().join("other.so");
        std::fs::write(&other, b"other").unwrap();
        let o = Identity::of(&other).unwrap();
        cache.store(vec![(o, other, v, String::new())]).unwrap();
        let reopened = VerdictCache::open(&cache_dir).unwrap();
        assert!(reopened.get(&g).is_none(), "the verdict of a deleted file is dropped");
        assert!(reopened.get(&k).is_some());
        assert!(!gone_copy.exists() && !tmp.exists(), "old leftovers are removed");
        assert!(kept_copy.exists());
    }
}
