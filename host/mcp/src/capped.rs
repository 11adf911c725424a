//! A stdio MCP server's output, read with each line (one JSON-RPC message)
//! capped while it is read: past the cap the rest of the line is skipped, not
//! held, and the request it answered gets an error of zu's instead, so a
//! hostile server cannot make zu hold a 500 MB result.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The JSON-RPC error code of a message zu cut.
pub const CUT_CODE: i32 = -32099;
/// How the error of a message zu cut begins.
pub const CUT_MESSAGE: &str = "zu: the MCP server's answer was over";
/// How much of a line's start and end is kept to find its id.
const KEEP: usize = 256;

/// `inner` with lines longer than `cap` bytes cut.
pub struct CappedLines<R> {
    inner: R,
    cap: usize,
    /// Bytes of the current line handed on so far.
    line: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    cutting: bool,
    /// Bytes ready to hand out (a read's worth, plus a line of zu's).
    out: std::collections::VecDeque<u8>,
    buf: Box<[u8]>,
    /// Set when a message was cut whose id could not be read: the stream
    /// ends there, and the caller says why.
    pub lost: Arc<AtomicBool>,
    ended: bool,
}

impl<R> CappedLines<R> {
    pub fn new(inner: R, cap: usize) -> Self {
        CappedLines {
            inner,
            cap,
            line: 0,
            head: Vec::new(),
            tail: Vec::new(),
            cutting: false,
            out: Default::default(),
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            lost: Arc::new(AtomicBool::new(false)),
            ended: false,
        }
    }

    /// Takes `n` bytes just read from the server.
    fn take(&mut self, n: usize) {
        let bytes = std::mem::take(&mut self.buf);
        let mut rest = &bytes[..n];
        while !rest.is_empty() {
            let (seg, newline) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = &rest[seg.len() + usize::from(newline)..];
            if self.cutting {
                keep_tail(&mut self.tail, seg);
            } else {
                let room = self.cap - self.line;
                let passed = &seg[..seg.len().min(room)];
                self.out.extend(passed);
                self.line += passed.len();
                let want = KEEP.saturating_sub(self.head.len()).min(passed.len());
                self.head.extend_from_slice(&passed[..want]);
                if seg.len() > room {
                    // Past the cap: end what was handed on as a line (the reader
                    // skips it as unparsable) and skip the rest of the line.
                    self.out.push_back(b'\n');
                    self.cutting = true;
                    keep_tail(&mut self.tail, &seg[room..]);
                }
            }
            if newline {
                if self.cutting {
                    match id_of(&self.head, &self.tail) {
                        Some(id) => {
                            let error = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {
                                "code": CUT_CODE, "message": format!("{CUT_MESSAGE} {} bytes; zu cut it while reading", self.cap)}});
                            tracing::warn!(cap = self.cap, "an MCP server's message was over the cap; cut");
                            self.out.extend(error.to_string().as_bytes());
                        }
                        None => {
                            self.lost.store(true, Ordering::Release);
                            self.ended = true;
                        }
                    }
                }
                self.out.push_back(b'\n');
                self.line = 0;
                self.head.clear();
                self.tail.clear();
                self.cutting = false;
                if self.ended {
                    break;
                }
            }
        }
        self.buf = bytes;
    }
}

fn keep_tail(tail: &mut Vec<u8>, seg: &[u8]) {
    tail.extend_from_slice(&seg[seg.len().saturating_sub(KEEP)..]);
    if tail.len() > KEEP {
        tail.drain(..tail.len() - KEEP);
    }
}

/// The id of a cut JSON-RPC message: its top-level `"id"`, which serializers
/// put first (`{"jsonrpc":"2.0","id":7,"result":…`) or last (`…,"id":7}`).
fn id_of(head: &[u8], tail: &[u8]) -> Option<serde_json::Value> {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    if let Some(at) = find(head, b"\"id\"") {
        let before_body = [&b"\"result\""[..], b"\"error\"", b"\"params\""]
            .iter()
            .filter_map(|k| find(head, k))
            .all(|k| at < k);
        if before_body {
            if let Some((id, _)) = value_after(&head[at + 4..]) {
                return Some(id);
            }
        }
    }
    let at = tail.windows(4).rposition(|w| w == b"\"id\"")?;
    let (id, rest) = value_after(&tail[at + 4..])?;
    let rest: Vec<u8> = rest.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    (rest == b"}" || rest == b"}\r").then_some(id)
}

/// The number or plain string after `: ` at the start of `s`, and what follows.
fn value_after(s: &[u8]) -> Option<(serde_json::Value, &[u8])> {
    let s = s.strip_prefix(b" ").unwrap_or(s);
    let s = s.strip_prefix(b":")?;
    let s = &s[s.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let len = if s.first() == Some(&b'"') {
        2 + s[1..].iter().take_while(|b| **b != b'"' && **b != b'\\').count()
    } else {
        s.iter().take_while(|b| b.is_ascii_digit() || **b == b'-').count()
    };
    let value = serde_json::from_slice(s.get(..len)?).ok()?;
    Some((value, &s[len..]))
}

impl<R: AsyncRead + Unpin> AsyncRead for CappedLines<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                let (a, b) = this.out.as_slices();
                let from_a = n.min(a.len());
                buf.put_slice(&a[..from_a]);
                buf.put_slice(&b[..n - from_a]);
                this.out.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        this.ended = true;
                        continue;
                    }
                    this.take(n);
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn read_all(input: Vec<u8>, cap: usize) -> (String, bool) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut r = CappedLines::new(&input[..], cap);
            let mut out = Vec::new();
            r.read_to_end(&mut out).await.unwrap();
            (String::from_utf8(out).unwrap(), r.lost.load(Ordering::Acquire))
        })
    }

    #[test]
    fn short_lines_pass_unchanged() {
        let input = b"{\"id\":1}\n\n{\"a\":2}\n".to_vec();
        assert_eq!(read_all(input.clone(), 100).0.as_bytes(), &input[..]);
    }

    #[test]
    fn a_long_line_becomes_an_error_for_its_id_first_or_last() {
        let big = "x".repeat(10_000);
        for (line, id) in [
            (
                format!("{{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{{\"t\":\"{big}\"}}}}"),
                "7",
            ),
            (
                format!("{{\"result\":{{\"t\":\"{big}\",\"id\":3}},\"jsonrpc\":\"2.0\",\"id\":\"r-9\"}}"),
                "\"r-9\"",
            ),
        ] {
            let (out, lost) = read_all(format!("{line}\n{{\"next\":1}}\n").into_bytes(), 100);
            assert!(!lost);
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 3, "{out}");
            assert_eq!(lines[0].len(), 100, "the cut start, which the reader skips");
            let err: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
            assert_eq!(err["id"].to_string(), id);
            assert_eq!(err["error"]["code"], CUT_CODE);
            assert_eq!(lines[2], "{\"next\":1}");
        }
    }

    #[test]
    fn a_long_line_with_no_id_to_read_ends_the_stream() {
        let line = format!("{{\"result\":\"{}\"}}\n{{\"after\":1}}\n", "y".repeat(5000));
        let (out, lost) = read_all(line.into_bytes(), 64);
        assert!(lost);
        assert!(!out.contains("after"));
    }
}
