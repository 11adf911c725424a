//! The log file itself: appends under an exclusive `flock` that every writer
//! takes (so a torn last line — an append cut short by a crash — is repaired
//! only when no other writer can be mid-append), and tolerant reads that
//! number every non-blank line, skip what does not parse, remember where
//! lines start, and notice when the file was deleted, replaced or truncated.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use zu_plugin_api::contracts::Event;
use zu_plugin_api::PluginError;

/// `jsonl sink PATH: WHAT: ERROR`.
pub fn fail(path: &Path, what: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::failed(format!("jsonl sink {}: {what}: {e}", path.display()))
}

/// Holds an exclusive lock (`flock`) on the log while an append (and any
/// repair) runs; every writer takes it.
struct Locked<'a>(&'a File);

impl<'a> Locked<'a> {
    fn take(file: &'a File, path: &Path) -> Result<Self, PluginError> {
        file.lock()
            .map_err(|e| fail(path, "cannot lock the log for writing", e))?;
        Ok(Locked(file))
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Drops a torn last line (bytes after the last newline), which a writer
/// that crashed mid-append left. Only called with the lock held.
fn repair_torn_tail(file: &mut File, path: &Path) -> Result<(), PluginError> {
    let len = file.metadata().map_err(|e| fail(path, "cannot stat", e))?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))
        .map_err(|e| fail(path, "cannot read", e))?;
    file.read_exact(&mut last).map_err(|e| fail(path, "cannot read", e))?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Find the last newline, reading backwards in chunks.
    let mut end = len;
    let mut keep = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))
            .map_err(|e| fail(path, "cannot read", e))?;
        file.read_exact(&mut chunk[..n])
            .map_err(|e| fail(path, "cannot read", e))?;
        if let Some(i) = chunk[..n].iter().rposition(|b| *b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    eprintln!(
        "zu jsonl sink: {}: dropping a torn last line ({} bytes) that a writer left when it stopped mid-append",
        path.display(),
        len - keep
    );
    file.set_len(keep)
        .map_err(|e| fail(path, "cannot drop the torn line", e))
}

/// Appends `lines` (each ending in a newline) as one write, under the lock;
/// `sync` makes them durable against a power cut before returning.
pub fn append(file: &mut File, path: &Path, lines: &[u8], sync: bool) -> Result<(), PluginError> {
    let handle = file.try_clone().map_err(|e| fail(path, "cannot lock", e))?;
    let _lock = Locked::take(&handle, path)?;
    repair_torn_tail(file, path)?;
    file.write_all(lines).map_err(|e| fail(path, "cannot append", e))?;
    if sync {
        file.sync_data().map_err(|e| fail(path, "cannot sync", e))?;
    }
    Ok(())
}

/// Opens the log for appending, creating it.
pub fn open_for_append(path: &Path) -> Result<File, PluginError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| fail(path, "cannot open", e))
}

/// A file's identity, length and first bytes, to notice a replaced or
/// truncated log (also one truncated and written again before a read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    dev: u64,
    ino: u64,
    len: u64,
    head: Vec<u8>,
}

/// How many leading bytes identify a log's content (its first event's id).
const HEAD: usize = 64;

impl Seen {
    pub fn of(file: &File, path: &Path) -> Result<Seen, PluginError> {
        let meta = file.metadata().map_err(|e| fail(path, "cannot stat", e))?;
        let mut head = vec![0; HEAD];
        let n = file.read_at(&mut head, 0).map_err(|e| fail(path, "cannot read", e))?;
        head.truncate(n);
        Ok(Seen {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            head,
        })
    }

    /// What happened to the log since `self` was seen, if it is not the
    /// same file grown: "replaced" or "truncated".
    pub fn change(&self, now: &Seen) -> Option<&'static str> {
        if (self.dev, self.ino) != (now.dev, now.ino) {
            return Some("replaced");
        }
        let same_start = now.head.starts_with(&self.head) || self.head.starts_with(&now.head);
        (now.len < self.len || !same_start).then_some("truncated")
    }
}

/// One line of the log as a reader finds it.
pub enum Line {
    /// A well-formed event.
    Event(Event),
    /// A complete line that is not an event: where, and why.
    Bad(String),
}

/// Where lines start: every `EVERY`th line's (seq before it, byte offset),
/// so a read after a sequence number seeks instead of scanning from the top.
#[derive(Default)]
pub struct Marks(Vec<(u64, u64)>);

const EVERY: u64 = 1024;

impl Marks {
    /// The last mark at or before `seq`: (seq before it, offset).
    fn before(&self, seq: u64) -> (u64, u64) {
        let i = self.0.partition_point(|(s, _)| *s <= seq);
        if i == 0 {
            (0, 0)
        } else {
            self.0[i - 1]
        }
    }

    fn note(&mut self, seq: u64, offset: u64) {
        if seq.is_multiple_of(EVERY) && self.0.last().is_none_or(|(s, _)| *s < seq) {
            self.0.push((seq, offset));
        }
    }
}

/// Reads `file` from the line after `after_seq` (using `marks`), calling
/// `each(seq, line)` for every complete non-blank line until it returns
/// false. A line still being written (no newline yet) is not read.
pub fn scan(
    file: &File,
    path: &Path,
    marks: &mut Marks,
    after_seq: u64,
    mut each: impl FnMut(u64, Line) -> bool,
) -> Result<(), PluginError> {
    let (mut seq, offset) = marks.before(after_seq);
    let mut reader = BufReader::new(file);
    reader
        .seek(SeekFrom::Start(offset))
        .map_err(|e| fail(path, "cannot read", e))?;
    let mut pos = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| fail(path, "cannot read", e))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(()); // the end, or an append in progress or cut short
        }
        let start = pos;
        pos += n as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        marks.note(seq, start);
        seq += 1;
        if seq <= after_seq {
            continue;
        }
        let parsed = std::str::from_utf8(&line)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Event>(t.trim()).map_err(|e| e.to_string()));
        let item = match parsed {
            Ok(event) => Line::Event(event),
            Err(reason) => Line::Bad(format!("line {seq} is not a valid event: {reason}")),
        };
        if !each(seq, item) {
            return Ok(());
        }
    }
}
