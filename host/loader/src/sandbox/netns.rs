//! The network a `net` sandbox sees: a namespace of its own with only a
//! loopback device, one listening forwarder per granted host and port, a
//! name server that answers only the granted names, and `/etc/hosts` and
//! `/etc/resolv.conf` saying so. The sandboxed process makes the sockets
//! inside its namespace before any plugin code runs and hands them to zu
//! (`gate.rs`), which accepts on them and connects out from its own network.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// One way out: where the forwarder listens inside the namespace, and the
/// granted host and port the gate connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub listen: SocketAddr,
    pub host: String,
    pub port: u16,
}

/// Where the namespace's name server listens.
pub const RESOLVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53);

/// The most forwarders one sandbox gets (they travel in one message).
pub const MAX_FORWARDS: usize = 200;

/// `host:port` (`[v6]:port`) as host and port.
pub fn split(entry: &str) -> Option<(String, u16)> {
    let (host, port) = entry.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_ascii_lowercase(), port.parse().ok()?))
}

/// The forwarders for `hosts` (`host:port` each): an address literal keeps
/// its address, and each name (`localhost` too: zu's own) gets an address of
/// its own in 127.77.0.0/16, the same for all its ports.
pub fn plan(hosts: &[String]) -> Vec<Forward> {
    let mut names: Vec<(String, IpAddr)> = Vec::new();
    let mut out: Vec<Forward> = Vec::new();
    let entries: Vec<(String, u16)> = hosts
        .iter()
        .filter_map(|h| split(h))
        // An IPv6 address the namespace's lo cannot hold and serve (link-local,
        // multicast, IPv4-mapped) is not forwarded: it would cost the others.
        .filter(|(host, _)| host.parse::<Ipv6Addr>().map_or(true, forwardable_v6))
        .take(MAX_FORWARDS)
        .collect();
    // A name's address is one no granted literal holds.
    let literals: Vec<IpAddr> = entries.iter().filter_map(|(h, _)| h.parse().ok()).collect();
    let mut next = 0u16;
    for (host, port) in entries {
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => match names.iter().find(|(n, _)| *n == host) {
                Some((_, ip)) => *ip,
                None => {
                    let ip = loop {
                        next += 1;
                        let ip = IpAddr::V4(Ipv4Addr::new(127, 77, (next >> 8) as u8, next as u8));
                        if !literals.contains(&ip) {
                            break ip;
                        }
                    };
                    names.push((host.clone(), ip));
                    ip
                }
            },
        };
        let listen = SocketAddr::new(ip, port);
        if !out.iter().any(|o| o.listen == listen) {
            out.push(Forward { listen, host, port });
        }
    }
    out
}

/// Whether an IPv6 literal can be given to lo and listened on: loopback,
/// or a unicast address that is not link-local or IPv4-mapped.
fn forwardable_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let link_local = (s[0] & 0xffc0) == 0xfe80;
    let multicast = (s[0] & 0xff00) == 0xff00;
    ip.is_loopback() || !(ip.is_unspecified() || link_local || multicast || ip.to_ipv4_mapped().is_some())
}

/// The address a granted name resolves to inside the namespace.
pub fn address_of(forwards: &[Forward], name: &str) -> Option<Ipv4Addr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let granted = forwards
        .iter()
        .find(|f| f.host == name)
        .and_then(|f| match f.listen.ip() {
            IpAddr::V4(v4) if f.host.parse::<IpAddr>().is_err() => Some(v4),
            _ => None,
        });
    // Not granted, `localhost` is the namespace's own loopback.
    granted.or((name == "localhost").then_some(Ipv4Addr::LOCALHOST))
}

fn hosts_file(forwards: &[Forward]) -> String {
    let mut text = String::new();
    if !forwards.iter().any(|f| f.host == "localhost") {
        text.push_str("127.0.0.1 localhost\n::1 localhost\n");
    }
    let mut seen = Vec::new();
    for f in forwards {
        if let Some(ip) = address_of(forwards, &f.host).filter(|_| !seen.contains(&f.host)) {
            text.push_str(&format!("{ip} {}\n", f.host));
            seen.push(f.host.clone());
        }
    }
    text
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The C form of an interface name.
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req
}

/// Brings the loopback device up, and gives it `extra` addresses (granted
/// address literals that are not loopback ones).
fn loopback_up(extra: &[IpAddr]) -> Result<(), String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(io("a socket to configure the loopback device"))?;
    let fd = sock.as_raw_fd();
    let mut req = ifreq("lo");
    // SAFETY: the ioctls read and write the ifreq we own.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io("reading lo's flags")(std::io::Error::last_os_error()));
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io("bringing lo up")(std::io::Error::last_os_error()));
        }
    }
    let v6: Vec<Ipv6Addr> = extra
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        })
        .collect();
    if !v6.is_empty() {
        add_v6(&v6)?;
    }
    let v4 = extra.iter().filter_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    });
    for (i, ip) in v4.enumerate() {
        let mut req = ifreq(&format!("lo:{}", i + 1));
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in fits the union's sockaddr; the ioctl reads the ifreq.
        unsafe {
            std::ptr::copy_nonoverlapping(
                &addr as *const libc::sockaddr_in as *const u8,
                &mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr as *mut u8,
                std::mem::size_of::<libc::sockaddr_in>(),
            );
            if libc::ioctl(fd, libc::SIOCSIFADDR, &req) != 0 {
                return Err(io("adding a granted address to lo")(std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

/// Gives the loopback device the IPv6 addresses `ips` (each a /128).
fn add_v6(ips: &[Ipv6Addr]) -> Result<(), String> {
    // SAFETY: if_nametoindex reads a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    for ip in ips {
        super::netlink::add_address(index, *ip).map_err(io("adding a granted IPv6 address to lo"))?;
    }
    Ok(())
}

fn mount(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), String> {
    let c = |s: &str| std::ffi::CString::new(s).map_err(|e| e.to_string());
    let (source, target) = (c(source)?, c(target)?);
    let fstype = fstype.map(c).transpose()?;
    let data = data.map(c).transpose()?;
    // SAFETY: every pointer is a NUL-terminated string we own, or null.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            data.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!("mount {target:?}: {}", std::io::Error::last_os_error()))
    }
}

/// Puts our `/etc/hosts` and `/etc/resolv.conf` in place, in this process's
/// own mount namespace: written to a tmpfs mounted over `/tmp` for the
/// moment, bound over the real files, and the tmpfs unmounted again.
fn name_files(forwards: &[Forward]) -> Result<(), String> {
    mount("none", "/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    mount(
        "tmpfs",
        "/tmp",
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )?;
    let result = (|| {
        let resolv = format!("nameserver {}\noptions timeout:2 attempts:1\n", RESOLVER.ip());
        for (name, text) in [("hosts", hosts_file(forwards)), ("resolv.conf", resolv)] {
            let staged = format!("/tmp/{name}");
            std::fs::File::create(&staged)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(io("staging a name file"))?;
            let target = format!("/etc/{name}");
            if std::path::Path::new(&target).exists() {
                mount(&staged, &target, None, libc::MS_BIND, None)?;
            }
        }
        Ok(())
    })();
    // SAFETY: umount2 takes a path we own and a flag.
    unsafe { libc::umount2(c"/tmp".as_ptr(), libc::MNT_DETACH) };
    result
}

/// Sends `fds` over the gate's socket in one message.
fn hand_over(gate: RawFd, fds: &[RawFd]) -> Result<(), String> {
    let payload = [fds.len() as u8];
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: msghdr is plain data; the buffers it points to outlive the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), fds.len());
        if libc::sendmsg(gate, &msg, 0) < 0 {
            return Err(io("handing the forwarders to zu")(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// In a fresh network and mount namespace, with the capabilities of its
/// user namespace: the loopback device, the name server's socket, one
/// listener per forward and the name files; the sockets go to zu over
/// `gate` (the name server's first, then the forwarders' in order) and are
/// closed here.
pub fn set_up(forwards: &[Forward], gate: RawFd) -> Result<(), String> {
    let extra: Vec<IpAddr> = forwards
        .iter()
        .map(|f| f.listen.ip())
        .filter(|ip| !ip.is_loopback())
        .fold(Vec::new(), |mut v, ip| {
            if !v.contains(&ip) {
                v.push(ip);
            }
            v
        });
    loopback_up(&extra)?;
    let resolver = UdpSocket::bind(RESOLVER).map_err(io("the name server's socket"))?;
    let mut fds: Vec<OwnedFd> = vec![resolver.into()];
    for f in forwards {
        let listener = TcpListener::bind(f.listen).map_err(io("a forwarder's socket"))?;
        fds.push(listener.into());
    }
    name_files(forwards)?;
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    hand_over(gate, &raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_one_address_each_and_literals_keep_theirs() {
        let hosts: Vec<String> = [
            "api.example.com:443",
            "api.example.com:80",
            "127.0.0.1:5432",
            "Other.org:443",
            "[::1]:8080",
            "[2001:db8::1]:443",
        ]
        .map(String::from)
        .to_vec();
        let p = plan(&hosts);
        assert_eq!(p[0].listen, "127.77.0.1:443".parse().unwrap());
        assert_eq!(p[1].listen, "127.77.0.1:80".parse().unwrap());
        assert_eq!(p[2].listen, "127.0.0.1:5432".parse().unwrap());
        assert_eq!(p[3].listen, "127.77.0.2:443".parse().unwrap());
        assert_eq!(p[3].host, "other.org");
        assert_eq!(p[4].listen, "[::1]:8080".parse().unwrap());
        assert_eq!(
            p[5].listen,
            "[2001:db8::1]:443".parse().unwrap(),
            "an IPv6 literal keeps it too"
        );
        let odd: Vec<String> = ["[fe80::1]:80", "[ff02::1]:80", "[::ffff:10.0.0.1]:80", "[fd00::7]:80"]
            .map(String::from)
            .to_vec();
        let kept: Vec<String> = plan(&odd).iter().map(|f| f.host.clone()).collect();
        assert_eq!(
            kept,
            vec!["fd00::7".to_owned()],
            "link-local, multicast and mapped are not forwarded"
        );
        assert_eq!(address_of(&p, "API.example.com."), Some(Ipv4Addr::new(127, 77, 0, 1)));
        assert_eq!(address_of(&p, "127.0.0.1"), None, "literals need no name");
        assert_eq!(address_of(&p, "evil.com"), None);
        let file = hosts_file(&p);
        assert_eq!(file.matches("api.example.com").count(), 1, "{file}");
        assert!(file.contains("127.0.0.1 localhost"), "{file}");
        let shadow = plan(&["127.77.0.1:443".to_owned(), "api.example.com:443".to_owned()]);
        assert_eq!(
            shadow[1].listen,
            "127.77.0.2:443".parse().unwrap(),
            "a literal's address is not a name's"
        );
        let local = plan(&["localhost:5432".to_owned()]);
        assert_eq!(
            local[0].listen,
            "127.77.0.1:5432".parse().unwrap(),
            "granted, localhost is zu's"
        );
        assert_eq!(hosts_file(&local), "127.77.0.1 localhost\n");
    }
}
