//! Talking to a helper child (a probe, an isolated plugin) over pipes:
//! length-prefixed frames, reads under a deadline that spin briefly before
//! they sleep (a cross-core wake-up costs ~45 µs on a small VM, a short spin
//! ~1 µs), the child's stderr kept as a bounded tail, and how it ended.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a reader spins on an empty pipe before it sleeps in `poll`: long
/// enough that a peer answering within a few tens of microseconds needs no
/// wake-up (measured on 2 vCPUs: 25 µs gives ~18k loop steps/s with every
/// plugin isolated, 50-60 µs ~23k, 100 µs no better), short enough that an
/// idle process sleeps almost at once.
pub const SPIN: Duration = Duration::from_micros(50);

/// The largest frame either side accepts (a tool observation is at most
/// 1 MB of JSON; conversations and event pages can be larger).
pub const MAX_FRAME: usize = 256 << 20;

/// Why a frame could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The other side closed the pipe (it exited or died).
    Eof,
    /// The deadline passed first.
    Timeout,
    /// A frame longer than [`MAX_FRAME`], or an I/O error.
    Bad(String),
}

/// Puts a pipe end in non-blocking mode.
pub fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Reads length-prefixed frames from a non-blocking descriptor.
pub struct FrameReader {
    fd: RawFd,
    buf: Vec<u8>,
}

impl FrameReader {
    /// A reader of `fd`, which it puts in non-blocking mode.
    pub fn new(fd: RawFd) -> Self {
        set_nonblocking(fd);
        FrameReader {
            fd,
            buf: Vec::with_capacity(4096),
        }
    }

    /// One complete frame, if the buffer holds one.
    fn take_frame(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(ReadError::Bad(format!("a frame of {len} bytes, over the limit")));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }

    /// Reads what is there without blocking; `Ok(false)` when nothing was.
    fn fill(&mut self) -> Result<bool, ReadError> {
        const CHUNK: usize = 64 * 1024;
        self.buf.reserve(CHUNK);
        let spare = self.buf.spare_capacity_mut();
        // SAFETY: reading at most `spare.len()` bytes into the vector's spare
        // capacity, then exposing exactly the bytes the kernel wrote.
        let n = unsafe { libc::read(self.fd, spare.as_mut_ptr().cast(), spare.len()) };
        if n > 0 {
            unsafe { self.buf.set_len(self.buf.len() + n as usize) };
            return Ok(true);
        }
        if n == 0 {
            return Err(ReadError::Eof);
        }
        match std::io::Error::last_os_error() {
            e if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
            e => Err(ReadError::Bad(e.to_string())),
        }
    }

    /// The next frame, waiting until `deadline` (`None`: forever). Spins for
    /// [`SPIN`] on an empty pipe, then sleeps in `poll`.
    pub fn read(&mut self, deadline: Option<Instant>) -> Result<Vec<u8>, ReadError> {
        let mut spin_until = Instant::now() + SPIN;
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(frame);
            }
            if self.fill()? {
                spin_until = Instant::now() + SPIN;
                continue;
            }
            let now = Instant::now();
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            let timeout = match deadline {
                Some(d) if d <= now => return Err(ReadError::Timeout),
                Some(d) => (d - now).as_millis().clamp(1, i32::MAX as u128) as i32,
                None => -1,
            };
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd, valid for the call.
            unsafe { libc::poll(&mut pfd, 1, timeout) };
            spin_until = Instant::now(); // after a sleep, read once and sleep again if empty
        }
    }
}

/// Writes one length-prefixed frame.
pub fn write_frame(out: &mut impl Write, frame: &[u8]) -> std::io::Result<()> {
    let mut message = Vec::with_capacity(4 + frame.len());
    message.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    message.extend_from_slice(frame);
    out.write_all(&message)?;
    out.flush()
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Killed by a signal (its name, e.g. `SIGSEGV`).
    Signal(String),
    /// Exited with a status.
    Exit(i32),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Signal(s) => write!(f, "died of {s}"),
            Ended::Exit(c) => write!(f, "exited with status {c}"),
        }
    }
}

/// The name of a signal number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGSYS => "SIGSYS",
        other => return format!("signal {other}"),
    };
    name.to_owned()
}

/// The last bytes a child wrote to stderr (bounded), read on a thread so a
/// child that floods stderr never blocks on it.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<(VecDeque<u8>, u64)>>);

/// At most this much of a child's stderr is kept.
const TAIL: usize = 4096;

impl StderrTail {
    fn follow(&self, mut from: impl Read + Send + 'static, forward: Option<String>) {
        let tail = self.0.clone();
        std::thread::Builder::new()
            .name("zu-child-stderr".into())
            .spawn(move || {
                let mut chunk = [0u8; 8192];
                let mut forwarded = 0usize;
                let mut line = Vec::new();
                while let Ok(n) = from.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if let Some(prefix) = &forward {
                        // A plugin's stderr reaches zu's stderr line by line,
                        // prefixed, and capped at 1 MiB.
                        for &b in &chunk[..n] {
                            if b == b'\n' {
                                if forwarded < (1 << 20) {
                                    let text = String::from_utf8_lossy(&line);
                                    eprintln!("{prefix}{}", zu_runtime::display::escape(&text));
                                    forwarded += line.len() + 1;
                                }
                                line.clear();
                            } else if line.len() < 8192 {
                                line.push(b);
                            }
                        }
                    }
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    t.0.extend(&chunk[..n]);
                    t.1 += n as u64;
                    let excess = t.0.len().saturating_sub(TAIL);
                    t.0.drain(..excess);
                }
            })
            .expect("the OS can start a thread");
    }

    /// How many bytes were written so far.
    pub fn mark(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// The last line written after `mark`, trimmed (empty if none). Waits a
    /// moment for the reader thread to catch up with a child that just ended.
    pub fn last_line_since(&self, mark: u64) -> String {
        std::thread::sleep(Duration::from_millis(20));
        let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let new = (t.1.saturating_sub(mark) as usize).min(t.0.len());
        let bytes: Vec<u8> = t.0.iter().skip(t.0.len() - new).copied().collect();
        String::from_utf8_lossy(&bytes)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .chars()
            .take(300)
            .collect()
    }
}

/// A helper child: `exe` with `args`, frames in on its stdin and out on its
/// stdout, stderr followed as a tail (and forwarded with `forward` as prefix).
pub struct HelperChild {
    child: Child,
    input: Option<ChildStdin>,
    /// Frames from the child.
    pub output: FrameReader,
    _stdout: ChildStdout,
    /// Its stderr.
    pub stderr: StderrTail,
    /// The egress gate of its network sandbox (closed with the child).
    pub gate: Option<crate::sandbox::Gate>,
}

impl HelperChild {
    /// Starts the child, with only the variables `env` (a sandbox's) when given.
    pub fn spawn(
        exe: &Path,
        args: &[&str],
        forward: Option<String>,
        env: Option<&[(String, std::ffi::OsString)]>,
        gate: Option<(crate::sandbox::Gate, std::os::fd::OwnedFd)>,
    ) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(exe);
        if let Some(env) = env {
            command.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        let gate = gate.map(|(gate, end)| {
            crate::sandbox::pass_gate(&mut command, &end);
            (gate, end)
        });
        let mut child = command
            .args(args)
            // Its own process group: a Ctrl-C at the terminal is the host's to handle.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let input = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = StderrTail::default();
        stderr.follow(child.stderr.take().expect("piped"), forward);
        Ok(HelperChild {
            child,
            input: Some(input),
            output: FrameReader::new(stdout.as_raw_fd()),
            _stdout: stdout,
            stderr,
            // The child's end is closed here once it has its own.
            gate: gate.map(|(gate, _end)| gate),
        })
    }

    /// Sends one frame.
    pub fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        match &mut self.input {
            Some(input) => write_frame(input, frame),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Closes the child's input (it should then exit) and waits up to
    /// `grace` before killing it.
    pub fn finish(&mut self, grace: Duration) -> Ended {
        self.input = None;
        self.end_within(grace)
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the child (if it still runs) and reaps it.
    pub fn kill(&mut self) -> Ended {
        let _ = self.child.kill();
        let ended = self.wait();
        self.kill_group();
        ended
    }

    /// Kills whatever is left of the child's process group (what a plugin
    /// with `subprocess` started: its sandbox keeps them in the group).
    fn kill_group(&self) {
        // SAFETY: kill takes two integers; the group is the child's own.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
    }

    /// Waits for the child to end and says how it did.
    pub fn wait(&mut self) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        match self.child.wait() {
            Ok(status) => match (status.signal(), status.code()) {
                (Some(sig), _) => Ended::Signal(signal_name(sig)),
                (None, Some(code)) => Ended::Exit(code),
                (None, None) => Ended::Exit(-1),
            },
            Err(_) => Ended::Exit(-1),
        }
    }

    /// Waits up to `grace` for the child to end by itself, then kills it.
    pub fn end_within(&mut self, grace: Duration) -> Ended {
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                let ended = self.wait();
                self.kill_group();
                return ended;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.kill()
    }
}

/// In a helper child: ends the process when its parent (the host) is gone,
/// even while a plugin call never returns.
fn follow_parent() {
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() };
    std::thread::Builder::new()
        .name("zu-parent-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: as above; _exit ends the process without running plugin code.
            if unsafe { libc::getppid() } != parent {
                unsafe { libc::_exit(0) };
            }
        })
        .expect("the OS can start a thread");
}

/// In a helper child: takes fd 0 and 1 for frames and points them at
/// `/dev/null` and stderr, so nothing a plugin prints (or reads) can touch
/// the frames; and ends with the host. Returns the frame reader and writer.
pub fn claim_stdio() -> (FrameReader, std::fs::File) {
    use std::os::fd::FromRawFd;
    follow_parent();
    // SAFETY: dup/dup2/open on the process's own standard descriptors, once,
    // before any plugin code runs.
    unsafe {
        let input = libc::dup(0);
        let output = libc::dup(1);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        libc::dup2(null, 0);
        libc::close(null);
        libc::dup2(2, 1);
        libc::fcntl(input, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(output, libc::F_SETFD, libc::FD_CLOEXEC);
        (FrameReader::new(input), std::fs::File::from_raw_fd(output))
    }
}
