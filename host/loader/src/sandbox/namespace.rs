//! The namespace layer: a sandboxed process enters a user namespace of its
//! own, so its process limit counts only its own processes and it holds no
//! capability over anything of the host's (even when zu runs as root); with
//! `net` scoped to hosts it also gets network and mount namespaces, set up
//! by `netns.rs`. Every capability is dropped before plugin code runs.

use std::sync::OnceLock;

const USER: libc::c_int = libc::CLONE_NEWUSER;
const NET: libc::c_int = libc::CLONE_NEWNET | libc::CLONE_NEWNS;

/// Whether this kernel lets an unprivileged process make user, network and
/// mount namespaces (some distributions and container runtimes forbid it).
/// Tried once, in a child.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // SAFETY: the forked child makes one system call and exits at once;
        // it touches no lock and allocates nothing.
        unsafe {
            match libc::fork() {
                0 => libc::_exit(if libc::unshare(USER | NET) == 0 { 0 } else { 1 }),
                -1 => false,
                pid => {
                    let mut status = 0;
                    libc::waitpid(pid, &mut status, 0) == pid
                        && libc::WIFEXITED(status)
                        && libc::WEXITSTATUS(status) == 0
                }
            }
        }
    })
}

/// Moves this process into a new user namespace (and network and mount
/// namespaces when `net`), keeping its user and group ids. The process must
/// have one thread. On an error nothing was changed.
pub fn enter(net: bool) -> Result<(), String> {
    // SAFETY: plain system calls on integers.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let flags = if net { USER | NET } else { USER };
    // SAFETY: unshare takes flags and changes only this process.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(format!("unshare: {}", std::io::Error::last_os_error()));
    }
    let write = |file: &str, text: String| std::fs::write(file, text).map_err(|e| format!("{file}: {e}"));
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    Ok(())
}

/// Drops every capability, now and across `exec` (the bounding and ambient
/// sets too), so neither this process nor a program it runs holds any.
pub fn drop_capabilities() -> bool {
    // SAFETY: prctl and capset with integer arguments and a struct we own.
    unsafe {
        for cap in 0..64 {
            // Past the kernel's last capability this fails with EINVAL: done.
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
            {
                break;
            }
        }
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let data = [Data::default(); 2];
        libc::syscall(libc::SYS_capset, &header, data.as_ptr()) == 0
    }
}
