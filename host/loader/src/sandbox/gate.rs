//! zu's side of a `net` sandbox, the egress gate: it receives the sockets
//! the sandboxed process made inside its network namespace (`netns.rs`),
//! accepts on each forwarder and connects to that forwarder's granted host
//! and port from zu's own network, answers name lookups for granted names
//! only, and notes each connection forwarded and each name refused
//! (`zu_runtime::egress`). Dropping the gate closes everything it holds.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zu_runtime::egress::{self, Reach};

use super::dns;
use super::netns::{self, Forward};

/// The variable a sandboxed child finds the gate's descriptor number in.
pub const GATE_ENV: &str = "ZU_SANDBOX_GATE";

/// How long the gate waits for the sandboxed process's sockets.
const HANDOVER: Duration = Duration::from_secs(30);
/// Connections one sandbox may have open through the gate at once.
const MAX_OPEN: usize = 64;
/// How long a connection to a granted host may take.
const CONNECT: Duration = Duration::from_secs(10);
/// Name questions answered per round of the serving loop.
const MAX_QUESTIONS: usize = 64;
/// How long a write to either end of a connection may block.
const WRITE: Duration = Duration::from_secs(30);
/// How often waiting threads look whether the gate was closed.
const TICK: i32 = 250;

struct Shared {
    closed: AtomicBool,
    label: Mutex<String>,
    /// The sockets received, kept here (the serving thread uses copies) so
    /// that closing the gate can shut them down.
    sockets: Mutex<Vec<OwnedFd>>,
    open: AtomicUsize,
    /// The serving thread is taking what its sockets have (then notes it).
    busy: AtomicBool,
}

impl egress::Gate for Shared {
    /// Waits (up to a second) until no forwarder holds a connection not yet
    /// taken, nor the serving thread one not yet noted: a plugin's connect
    /// returns once the kernel queued it, before the gate took it.
    fn settle(&self, until: Instant) {
        // The forwarders only: a name is noted before it is answered.
        let mut polls = readers(&self.sockets.lock().unwrap_or_else(|p| p.into_inner()));
        if !polls.is_empty() {
            polls.remove(0);
        }
        while Instant::now() < until && !self.closed.load(Ordering::SeqCst) {
            // SAFETY: poll reads and writes the pollfds we own, without waiting.
            let pending = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 0) } > 0;
            if !pending && !self.busy.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Shared {
    fn note(&self, host: &str, port: Option<u16>, allowed: bool) {
        let plugin = self.label.lock().unwrap_or_else(|p| p.into_inner()).clone();
        egress::note(Reach {
            plugin,
            host: host.to_owned(),
            port,
            allowed,
        });
    }
}

/// The egress gate of one sandboxed process.
pub struct Gate {
    shared: Arc<Shared>,
}

impl Gate {
    /// A gate for the granted `hosts` (`host:port` each), its notes naming
    /// `label`; and the descriptor to hand the sandboxed process (close-on-
    /// exec: the spawn clears that flag for that child alone).
    pub fn open(hosts: &[String], label: &str) -> std::io::Result<(Gate, OwnedFd)> {
        let mut pair = [0; 2];
        // SAFETY: socketpair writes two descriptors into the array we own.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and ours alone.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            label: Mutex::new(label.to_owned()),
            sockets: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
        });
        let weak: std::sync::Weak<dyn egress::Gate> = Arc::downgrade(&shared) as _;
        egress::register(weak);
        let forwards = netns::plan(hosts);
        let s = shared.clone();
        std::thread::Builder::new()
            .name("zu-egress-gate".into())
            .spawn(move || {
                if let Some(sockets) = receive(&ours, &s, forwards.len() + 1) {
                    serve(&s, sockets, &forwards);
                }
            })?;
        Ok((Gate { shared }, theirs))
    }

    /// Names the gate's notes after `label` (the plugins of its process).
    pub fn relabel(&self, label: &str) {
        *self.shared.label.lock().unwrap_or_else(|p| p.into_inner()) = label.to_owned();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for fd in self.shared.sockets.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            // SAFETY: shutdown on a descriptor we hold open wakes whoever waits on it.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }
}

/// What `poll` watches to see `sockets` readable.
fn readers(sockets: &[OwnedFd]) -> Vec<libc::pollfd> {
    sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect()
}

/// Waits until `fd` is readable, the gate closes, or `until` passes.
fn readable(fd: RawFd, shared: &Shared, until: Option<Instant>) -> bool {
    loop {
        if shared.closed.load(Ordering::SeqCst) || until.is_some_and(|u| Instant::now() >= u) {
            return false;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd we own.
        if unsafe { libc::poll(&mut p, 1, TICK) } > 0 {
            return true;
        }
    }
}

/// The sockets of the sandboxed process's one message (exactly `expected`).
fn receive(control: &OwnedFd, shared: &Shared, expected: usize) -> Option<Vec<OwnedFd>> {
    if !readable(control.as_raw_fd(), shared, Some(Instant::now() + HANDOVER)) {
        return None;
    }
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let space = unsafe { libc::CMSG_SPACE((netns::MAX_FORWARDS + 1) as u32 * 4) } as usize;
    let mut buffer = vec![0u8; space];
    let mut fds = Vec::new();
    // SAFETY: msghdr and its buffers are ours; every descriptor received is
    // wrapped at once (so closed if anything is off).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = buffer.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        if libc::recvmsg(control.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) <= 0 {
            return None;
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..n {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if fds.len() != expected {
        tracing::warn!(
            received = fds.len(),
            expected,
            "a sandboxed process handed the egress gate the wrong sockets; it gets no way out"
        );
        return None;
    }
    Some(fds)
}

/// Answers names and accepts connections until the gate closes.
fn serve(shared: &Arc<Shared>, sockets: Vec<OwnedFd>, forwards: &[Forward]) {
    let copies: Vec<OwnedFd> = sockets.iter().filter_map(|s| s.try_clone().ok()).collect();
    if copies.len() != sockets.len() {
        return;
    }
    shared.sockets.lock().unwrap_or_else(|p| p.into_inner()).extend(sockets);
    if shared.closed.load(Ordering::SeqCst) {
        return;
    }
    let sockets = copies;
    let mut polls = readers(&sockets);
    let mut sockets = sockets.into_iter();
    let resolver = UdpSocket::from(sockets.next().expect("the name server's socket first"));
    let listeners: Vec<std::net::TcpListener> = sockets.map(std::net::TcpListener::from).collect();
    for l in &listeners {
        let _ = l.set_nonblocking(true);
    }
    let _ = resolver.set_nonblocking(true);
    let mut packet = [0u8; 512];
    while !shared.closed.load(Ordering::SeqCst) {
        // SAFETY: poll reads and writes the pollfds we own.
        if unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, TICK) } <= 0 {
            continue;
        }
        shared.busy.store(true, Ordering::SeqCst);
        if polls[0].revents != 0 {
            // A bounded batch a round: a flood of questions cannot keep the
            // gate from its forwarders (or a run from taking its notes).
            for _ in 0..MAX_QUESTIONS {
                let Ok((n, from)) = resolver.recv_from(&mut packet) else {
                    break;
                };
                let Some((reply, refused)) = dns::answer(&packet[..n], |name| netns::address_of(forwards, name)) else {
                    continue;
                };
                if let Some(name) = refused {
                    tracing::info!(host = %name, "egress refused: a name the sandbox was not granted");
                    shared.note(&name, None, false);
                }
                let _ = resolver.send_to(&reply, from);
            }
        }
        for (i, l) in listeners.iter().enumerate() {
            if polls[i + 1].revents == 0 {
                continue;
            }
            while let Ok((inside, _)) = l.accept() {
                let f = &forwards[i];
                shared.note(&f.host, Some(f.port), true);
                if shared.open.fetch_add(1, Ordering::SeqCst) >= MAX_OPEN {
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(host = %f.host, port = f.port, "egress: too many open connections; closing one");
                    continue;
                }
                let (s, f) = (shared.clone(), f.clone());
                let spawned = std::thread::Builder::new().name("zu-egress".into()).spawn(move || {
                    relay(&s, inside, &f);
                    s.open.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        for p in &mut polls {
            p.revents = 0;
        }
        shared.busy.store(false, Ordering::SeqCst);
    }
}

/// Connects to the forward's host and copies both ways until both ends
/// are done (or the gate closes).
fn relay(shared: &Shared, inside: TcpStream, f: &Forward) {
    let _ = inside.set_nonblocking(false);
    // A granted name reaches what it names, not this machine or the cloud's
    // metadata service because its DNS says so (an address literal, or
    // `localhost`, is granted as what it is).
    let literal = f.host == "localhost" || f.host.parse::<std::net::IpAddr>().is_ok();
    let outside = (f.host.as_str(), f.port).to_socket_addrs().ok().and_then(|addrs| {
        addrs
            .into_iter()
            .filter(|a| literal || !local(a.ip()))
            .find_map(|a| TcpStream::connect_timeout(&a, CONNECT).ok())
    });
    let Some(outside) = outside else {
        tracing::info!(host = %f.host, port = f.port, "egress: the granted host did not answer");
        return;
    };
    // A peer that stops reading ends the relay, not a thread of zu's forever.
    for s in [&inside, &outside] {
        let _ = s.set_write_timeout(Some(WRITE));
    }
    // One direction on this thread, the other beside it.
    std::thread::scope(|scope| {
        scope.spawn(|| copy(shared, &outside, &inside));
        copy(shared, &inside, &outside);
    });
}

/// Loopback, link-local (the metadata service) or unspecified.
fn local(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| local(v4.into()))
        }
    }
}

fn copy(shared: &Shared, mut from: &TcpStream, mut to: &TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while readable(from.as_raw_fd(), shared, None) {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    if shared.closed.load(Ordering::SeqCst) {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}
