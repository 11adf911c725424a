//! Entering a sandbox: a helper child (a plugin process, the probe, `zu
//! __jail`) reads the policy its parent put in its environment and applies
//! it to itself, layer by layer, before any plugin code runs.

use std::path::PathBuf;

use super::{files, gate::GATE_ENV, namespace, netns, syscalls, Applied, Policy};

impl Policy {
    /// Applies the sandbox to this process (and its threads and children),
    /// allowing also what the process itself needs (`own`: its executable,
    /// the library copy); `gate` is the egress gate's descriptor. The
    /// process must still have one thread. Never undone.
    pub fn apply(&self, own: &[PathBuf], gate: Option<std::os::fd::RawFd>) -> Applied {
        // Made while nothing is denied yet: Landlock names only what exists.
        let logs = super::log_files::prepare(&self.write_files, self.make_files);
        let mut limits = self.limits.apply();
        let scoped = self.net && !self.open_network();
        // A network namespace too when `net` is scoped; failing that (some
        // kernels allow user namespaces only), a user namespace alone.
        let entered = if self.namespaces {
            namespace::enter(scoped).map(|()| scoped).or_else(|e| {
                eprintln!("zu sandbox: no namespaces of its own ({e})");
                namespace::enter(false).map(|()| false)
            })
        } else {
            Err("this kernel lets no process make namespaces".to_owned())
        };
        let net = match (self.net, &entered) {
            (false, _) => "denied",
            (true, _) if !scoped => "open",
            (true, Ok(true)) => match gate.map(|fd| netns::set_up(&netns::plan(&self.hosts), fd)) {
                Some(Ok(())) => "scoped",
                // Fail closed: the namespace stays, with no way out.
                Some(Err(e)) => {
                    eprintln!("zu sandbox: the network's ways out could not be made ({e}); it has none");
                    "denied"
                }
                None => "denied",
            },
            // Where the host found namespaces, it expected scoping: without
            // it, no network at all. Where it found none, `net` is open as
            // the host reported (and `required` refused).
            (true, _) if self.namespaces => {
                eprintln!("zu sandbox: no network namespace could be made here; this process gets no network");
                "denied"
            }
            (true, _) => "unscoped",
        };
        // Denied after all: no sockets, as for a plugin without `net`.
        let closed;
        let effective = if self.net && net == "denied" {
            closed = Policy {
                net: false,
                ..self.clone()
            };
            &closed
        } else {
            self
        };
        let namespace = entered.is_ok();
        if namespace {
            // Counted in its own user namespace: its own processes only.
            limits &= self.limits.apply_processes();
        }
        namespace::drop_capabilities();
        let (files, landlock_abi) = files::restrict(effective, own, logs);
        let syscalls = syscalls::install(effective);
        Applied {
            files,
            landlock_abi,
            syscalls,
            limits,
            namespace,
            net: net.into(),
        }
    }
}

/// Hands `end` (a gate's descriptor) to the child `command` starts: the
/// child alone inherits it, and finds its number in [`GATE_ENV`].
pub fn pass_gate(command: &mut std::process::Command, end: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = end.as_raw_fd();
    command.env(GATE_ENV, fd.to_string());
    // SAFETY: fcntl is async-signal-safe; it clears close-on-exec on one
    // descriptor in the forked child only.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Closes every descriptor from 3 up but `keep`: nothing zu's own parent
/// left open reaches plugin code.
fn close_inherited(keep: Option<std::os::fd::RawFd>) {
    let ranges = match keep {
        Some(k) if k >= 3 => vec![(3, k as u32 - 1), (k as u32 + 1, u32::MAX)],
        _ => vec![(3, u32::MAX)],
    };
    for (from, to) in ranges.into_iter().filter(|(f, t)| f <= t) {
        // SAFETY: close_range closes descriptors of this process only.
        unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) };
    }
}

/// The variable a sandboxed helper child finds its policy in.
pub const POLICY_ENV: &str = "ZU_SANDBOX_POLICY";

/// The environment of a helper child with `policy`: only the variables it
/// names (those zu has), and the policy itself.
pub fn environment(policy: &Policy) -> Vec<(String, std::ffi::OsString)> {
    let mut env: Vec<(String, std::ffi::OsString)> = policy
        .env
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (k.clone(), v)))
        .collect();
    let text = serde_json::to_string(policy).expect("a policy is plain data");
    env.push((POLICY_ENV.to_owned(), text.into()));
    env
}

/// In a helper child, first thing: applies the policy its parent put in
/// [`POLICY_ENV`] (plus read access to `own` and this executable) and says
/// what was enforced; `None` when the child was started without one.
/// A policy that cannot be read ends the child (exit 70): it never runs
/// plugin code outside the sandbox it was meant to have.
pub fn enter(own: &[PathBuf]) -> Option<Applied> {
    let text = std::env::var(POLICY_ENV).ok()?;
    std::env::remove_var(POLICY_ENV);
    let policy: Policy = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("zu sandbox: the sandbox policy from the host is unreadable ({e}); stopping");
            std::process::exit(70);
        }
    };
    let gate = std::env::var(GATE_ENV)
        .ok()
        .and_then(|v| v.parse::<std::os::fd::RawFd>().ok());
    std::env::remove_var(GATE_ENV);
    close_inherited(gate);
    let mut own = own.to_vec();
    if let Ok(exe) = std::env::current_exe() {
        own.push(exe);
    }
    let applied = policy.apply(&own, gate);
    if applied.net == "scoped" {
        // For `PluginError::net_denied`: what this process may reach.
        std::env::set_var(zu_plugin_api::error::SANDBOX_HOSTS_ENV, policy.hosts.join(","));
    }
    if let Some(fd) = gate {
        // SAFETY: the gate's descriptor is ours, used once above.
        unsafe { libc::close(fd) };
    }
    Some(applied)
}

/// The hidden subcommand that runs [`jail`].
pub const JAIL_COMMAND: &str = "__jail";

/// `zu __jail -- COMMAND ARGS...`: applies the policy its parent put in
/// [`POLICY_ENV`], then becomes `command` (which inherits the sandbox).
pub fn jail(command: &[std::ffi::OsString]) -> i32 {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = command.split_first() else {
        eprintln!("zu sandbox: __jail needs a command to run");
        return 2;
    };
    if enter(&[]).is_none() {
        eprintln!("zu sandbox: __jail was started without a sandbox policy; not running {program:?}");
        return 70;
    }
    let e = std::process::Command::new(program).args(args).exec();
    eprintln!("zu sandbox: cannot run {program:?} in its sandbox: {e}");
    127
}
