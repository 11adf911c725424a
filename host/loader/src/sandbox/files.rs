//! The files layer (Landlock): a sandboxed process reads the system paths a
//! program needs to run and what its policy grants, writes only what its
//! policy grants, executes only with `subprocess`, and with Landlock ABI 6
//! or later signals and abstract sockets stay inside its own domain. No
//! TCP bind or connect without `net` (ABI 4).

use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use super::Policy;

/// What every process reads (and may map): the loader, libraries, CA
/// certificates, time zones, the name service files, its own `/proc`.
pub const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/localtime",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/run/systemd/resolve",
    // Its own /proc only (the link resolves to /proc/PID when the rules are
    // made), and the system-wide files a runtime reads: not another process's.
    "/proc/self",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/cpuinfo",
    "/proc/sys/kernel",
    "/proc/sys/vm",
    "/sys/devices/system/cpu",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
];

/// What every process may write: nothing but `/dev/null`.
const SYSTEM_WRITE: &[&str] = &["/dev/null"];

const ABI_WANTED: ABI = ABI::V6;

/// The kernel's Landlock ABI, 0 when it has none (or it is disabled).
pub fn abi() -> i32 {
    const VERSION: libc::c_uint = 1; // LANDLOCK_CREATE_RULESET_VERSION
                                     // SAFETY: with the VERSION flag and no attributes, the call only answers the ABI.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            VERSION,
        )
    };
    i32::try_from(v).unwrap_or(0).max(0)
}

/// Restricts this process to `policy` (plus `own`, read-only, and `logs`,
/// files it reads and writes): how much was enforced (`fully`, `partly`,
/// `not`) and the ABI.
pub fn restrict(policy: &Policy, own: &[PathBuf], logs: Vec<super::log_files::LogFile>) -> (String, i32) {
    let abi = abi();
    let status = build(policy, own, logs).and_then(|r| r.restrict_self().map_err(|e| e.to_string()));
    let enforced = match status {
        Ok(s) => match s.ruleset {
            RulesetStatus::FullyEnforced => "fully",
            RulesetStatus::PartiallyEnforced => "partly",
            RulesetStatus::NotEnforced => "not",
        },
        Err(e) => {
            eprintln!("zu sandbox: Landlock could not be applied: {e}");
            "not"
        }
    };
    (enforced.to_owned(), abi)
}

fn build(
    policy: &Policy,
    own: &[PathBuf],
    logs: Vec<super::log_files::LogFile>,
) -> Result<landlock::RulesetCreated, String> {
    let all = AccessFs::from_all(ABI_WANTED);
    let read = AccessFs::from_read(ABI_WANTED) & !BitFlags::from(AccessFs::Execute);
    let read_exec = AccessFs::from_read(ABI_WANTED);
    let system = if policy.subprocess && !policy.exec_only {
        read_exec
    } else {
        read
    };
    let e = |e: landlock::RulesetError| e.to_string();
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(e)?;
    if !policy.net {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(e)?;
    }
    let created = ruleset
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(e)?
        .create()
        .map_err(e)?
        .add_rules(path_beneath_rules(SYSTEM_READ.iter().map(Path::new), system))
        .map_err(e)?
        .add_rules(path_beneath_rules(own, read))
        .map_err(e)?
        .add_rules(path_beneath_rules(&policy.read, read))
        .map_err(e)?
        .add_rules(path_beneath_rules(&policy.exec, read_exec))
        .map_err(e)?
        .add_rules(path_beneath_rules(SYSTEM_WRITE.iter().map(Path::new), all))
        .map_err(e)?
        .add_rules(path_beneath_rules(
            &policy.write,
            all & !BitFlags::from(AccessFs::Execute),
        ))
        .map_err(e)?
        // Each on the descriptor that was checked (a regular file, one name).
        .add_rules(logs.into_iter().map(|f| {
            let access = match f.write {
                true => AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate,
                false => BitFlags::from(AccessFs::ReadFile),
            };
            Ok::<_, landlock::RulesetError>(PathBeneath::new(f.fd, access))
        }))
        .map_err(e)?;
    Ok(created)
}
