//! The system-call layer (seccomp, through `seccompiler`): calls a plugin may
//! not make fail with EPERM, so the plugin sees an error it can report.
//! Without `subprocess`: no `execve`, `execveat`, `fork`, `vfork`, or `clone`
//! of a new process. Without `net`: no socket; with it, only internet and
//! netlink ones. Always: no `ptrace`, `process_vm_*`, io_uring, BPF,
//! keyrings, mounts, namespaces, leaving the process group (`setsid`,
//! `setpgid`), a `clone` that makes a namespace, or changing another
//! process's limits or scheduling; on x86_64, no x32-ABI call.

use std::collections::BTreeMap;

use seccompiler::{
    apply_filter_all_threads, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use super::Policy;

/// Calls that are never a plugin's business.
const ALWAYS_DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_userfaultfd,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_unshare,
    libc::SYS_setns,
    // A process stays in its process group, which zu kills as one.
    libc::SYS_setsid,
    libc::SYS_setpgid,
    libc::SYS_kexec_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
];

#[cfg(target_arch = "x86_64")]
const ARCH: Option<TargetArch> = Some(TargetArch::x86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: Option<TargetArch> = Some(TargetArch::aarch64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: Option<TargetArch> = None;

/// Whether this build can install a filter here.
pub fn available() -> bool {
    ARCH.is_some() && std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("Seccomp:"))
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("a valid seccomp rule")
}

fn arg(index: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).expect("a valid seccomp condition")
}

/// The filters for `policy`: the EPERM rules, and clone3's ENOSYS.
fn programs(policy: &Policy, arch: TargetArch) -> Result<[BpfProgram; 2], seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for call in ALWAYS_DENIED {
        rules.insert(*call, vec![]);
    }
    // A clone that makes a namespace (as unshare would): never.
    let mut clone_rules: Vec<SeccompRule> = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
    ]
    .iter()
    .map(|flag| {
        let flag = *flag as u32 as u64;
        rule(vec![arg(0, SeccompCmpOp::MaskedEq(flag), flag)])
    })
    .collect();
    if !policy.subprocess {
        for call in [libc::SYS_execve, libc::SYS_execveat, libc::SYS_fork, libc::SYS_vfork] {
            rules.insert(call, vec![]);
        }
        // A clone without CLONE_THREAD is a new process; threads stay allowed.
        let thread = libc::CLONE_THREAD as u64;
        clone_rules.push(rule(vec![arg(0, SeccompCmpOp::MaskedEq(thread), 0)]));
    }
    rules.insert(libc::SYS_clone, clone_rules);
    // Sockets: without `net`, none at all (a socket file is a way out that
    // Landlock before ABI 9 cannot close: docker.sock, a session bus); with
    // it, the internet families and netlink (name lookups), never AF_UNIX.
    // `socketpair` stays: it reaches nothing outside.
    if policy.net {
        let allowed = [libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK];
        let not = allowed.iter().map(|f| arg(0, SeccompCmpOp::Ne, *f as u64)).collect();
        rules.insert(libc::SYS_socket, vec![rule(not)]);
    } else {
        rules.insert(libc::SYS_socket, vec![]);
    }
    // Limits, priorities and scheduling of another process (a zero limit on
    // zu's CPU kills it): only their own (pid 0).
    for call in [
        libc::SYS_prlimit64,
        libc::SYS_sched_setaffinity,
        libc::SYS_sched_setscheduler,
        libc::SYS_sched_setparam,
        libc::SYS_sched_setattr,
        libc::SYS_migrate_pages,
        libc::SYS_move_pages,
    ] {
        rules.insert(call, vec![rule(vec![arg(0, SeccompCmpOp::Ne, 0)])]);
    }
    for call in [libc::SYS_setpriority, libc::SYS_ioprio_set] {
        rules.insert(call, vec![rule(vec![arg(1, SeccompCmpOp::Ne, 0)])]);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    // clone3 passes its flags in memory a filter cannot read: it is refused
    // with ENOSYS, and the C library falls back to clone, which is checked.
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    Ok([filter.try_into()?, clone3.try_into()?])
}

/// On x86_64, the x32 ABI's calls carry bit 30 in their number and would
/// match none of the rules above: every such call fails with EPERM (on a
/// kernel without x32 they fail anyway, with ENOSYS).
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let op = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    vec![
        // A = seccomp_data.nr
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        op(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, X32_SYSCALL_BIT, 0, 1),
        op(libc::BPF_RET | libc::BPF_K, RET_ERRNO | libc::EPERM as u32, 0, 0),
        op(libc::BPF_RET | libc::BPF_K, RET_ALLOW, 0, 0),
    ]
}

/// Installs the filter on every thread of this process (and what it starts).
pub fn install(policy: &Policy) -> bool {
    let Some(arch) = ARCH else { return false };
    let programs = match programs(policy, arch) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("zu sandbox: no seccomp filter ({e})");
            return false;
        }
    };
    #[cfg(target_arch = "x86_64")]
    let programs = [&programs[..], &[x32_guard()]].concat();
    // Each filter sees every call; the kernel takes the strictest answer.
    for program in &programs {
        if let Err(e) = apply_filter_all_threads(program) {
            eprintln!("zu sandbox: the seccomp filter could not be installed ({e})");
            return false;
        }
    }
    true
}
