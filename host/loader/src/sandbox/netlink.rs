//! One rtnetlink request: adds an IPv6 address to a device with no
//! duplicate address detection, so it can be bound at once (an address
//! added by ioctl stays "tentative", unusable, until detection ends).

use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const RT_SCOPE_HOST: u8 = 254;

/// Adds `ip`/128 to the device with `index`, usable at once.
pub(super) fn add_address(index: u32, ip: Ipv6Addr) -> std::io::Result<()> {
    // SAFETY: socket takes constants; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let message = request(index, ip);
    // SAFETY: send reads `message`, which outlives the call; the kernel is
    // the default destination of a netlink socket.
    if unsafe { libc::send(sock.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut answer = [0u8; 512];
    // SAFETY: recv writes at most answer.len() bytes into answer.
    let n = unsafe { libc::recv(sock.as_raw_fd(), answer.as_mut_ptr().cast(), answer.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    acknowledged(&answer[..n as usize])
}

/// RTM_NEWADDR for `ip`/128 on `index`, asking for an acknowledgement.
fn request(index: u32, ip: Ipv6Addr) -> Vec<u8> {
    let mut body = Vec::new();
    // struct ifaddrmsg: family, prefix length, flags, scope, index.
    body.extend([libc::AF_INET6 as u8, 128, IFA_F_NODAD, RT_SCOPE_HOST]);
    body.extend(index.to_ne_bytes());
    for kind in [IFA_LOCAL, IFA_ADDRESS] {
        // struct rtattr: length, type; then the 16 bytes (already aligned).
        body.extend(20u16.to_ne_bytes());
        body.extend(kind.to_ne_bytes());
        body.extend(ip.octets());
    }
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let mut out = Vec::with_capacity(16 + body.len());
    // struct nlmsghdr: length, type, flags, sequence, port.
    out.extend(((16 + body.len()) as u32).to_ne_bytes());
    out.extend(libc::RTM_NEWADDR.to_ne_bytes());
    out.extend(flags.to_ne_bytes());
    out.extend(1u32.to_ne_bytes());
    out.extend(0u32.to_ne_bytes());
    out.extend(body);
    out
}

/// The kernel's answer: an NLMSG_ERROR whose error is 0 is success.
fn acknowledged(answer: &[u8]) -> std::io::Result<()> {
    let field = |at: usize, len: usize| answer.get(at..at + len);
    let kind = field(4, 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let error = field(16, 4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (kind, error) {
        (Some(k), Some(0)) if k == libc::NLMSG_ERROR as u16 => Ok(()),
        (Some(k), Some(e)) if k == libc::NLMSG_ERROR as u16 => Err(std::io::Error::from_raw_os_error(-e)),
        _ => Err(std::io::Error::other(
            "an unexpected answer from the kernel's routing socket",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_one_message_of_its_stated_length_and_answers_are_read() {
        let m = request(1, "fd00::1".parse().unwrap());
        assert_eq!(m.len(), 16 + 8 + 2 * 20);
        assert_eq!(u32::from_ne_bytes(m[..4].try_into().unwrap()) as usize, m.len());
        assert_eq!(&m[m.len() - 16..], &"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert!(acknowledged(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(acknowledged(&ack).unwrap_err().raw_os_error(), Some(libc::EEXIST));
        assert!(acknowledged(&ack[..8]).is_err());
    }
}
