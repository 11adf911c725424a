//! `without LAYER -- COMMAND ARGS...`: runs COMMAND on a kernel that seems
//! to lack one of the sandbox's layers, as containers and some distributions
//! do: `namespaces` (unshare fails with EPERM, as under Docker's default
//! seccomp profile) or `landlock` (its calls fail with ENOSYS, as on a kernel
//! built without it). A seccomp filter does it, inherited by everything
//! COMMAND starts; nothing else changes.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;

use seccompiler::{apply_filter, BpfProgram, SeccompAction, SeccompFilter, TargetArch};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (layer, command) = match args.split_first() {
        Some((layer, rest)) if rest.first().map(String::as_str) == Some("--") && rest.len() > 1 => {
            (layer.clone(), &rest[1..])
        }
        _ => {
            eprintln!("usage: without namespaces|landlock -- COMMAND ARGS...");
            std::process::exit(2);
        }
    };
    let (calls, errno): (Vec<i64>, i32) = match layer.as_str() {
        "namespaces" => (vec![libc::SYS_unshare, libc::SYS_setns], libc::EPERM),
        "landlock" => (
            vec![
                libc::SYS_landlock_create_ruleset,
                libc::SYS_landlock_add_rule,
                libc::SYS_landlock_restrict_self,
            ],
            libc::ENOSYS,
        ),
        other => {
            eprintln!("without: no layer {other:?} (namespaces, landlock)");
            std::process::exit(2);
        }
    };
    let arch = if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    };
    let filter = SeccompFilter::new(
        calls.into_iter().map(|c| (c, vec![])).collect::<BTreeMap<_, _>>(),
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .expect("a valid filter");
    let program: BpfProgram = filter.try_into().expect("a filter that compiles");
    apply_filter(&program).expect("the filter installs");
    let e = std::process::Command::new(&command[0]).args(&command[1..]).exec();
    eprintln!("without: cannot run {:?}: {e}", command[0]);
    std::process::exit(127);
}
