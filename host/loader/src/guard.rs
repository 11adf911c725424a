//! What a host process does so that plugins loaded into it cannot speak for
//! it: keep its real stdout on a private descriptor (descriptor 1 then points
//! at stderr, where a plugin's prints land), and turn an `exit` the host did
//! not make itself into an exit status of the host's choosing.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The process's real stdout, taken for the host alone; descriptor 1 is
/// pointed at stderr. `None` if there is no stdout.
pub fn claim_stdout() -> Option<File> {
    // SAFETY: dup/dup2 of the process's own standard descriptors, before
    // any plugin is loaded.
    unsafe {
        let private = libc::dup(1);
        if private < 0 {
            return None;
        }
        libc::fcntl(private, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::dup2(2, 1);
        Some(File::from_raw_fd(private))
    }
}

static LEAVING: AtomicBool = AtomicBool::new(false);
static PLUGIN_EXIT_CODE: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_exit() {
    if LEAVING.load(Ordering::Acquire) {
        return;
    }
    let code = PLUGIN_EXIT_CODE.load(Ordering::Acquire);
    let who = zu_runtime::deadline::current_plugin().map_or_else(|| "a plugin".to_owned(), |p| format!("plugin {p:?}"));
    let message = format!(
        "zu: {who} called exit() inside zu (it runs in-process); zu ends with status {code}, a plugin's exit is not zu's\n"
    );
    // SAFETY: write(2) and _exit(2) may be called at exit time.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::_exit(code);
    }
}

/// From now on, an `exit` not announced with [`leaving`] (a plugin calling
/// `exit()` in this process) ends the process with `code`, saying so.
pub fn guard_exit(code: i32) {
    PLUGIN_EXIT_CODE.store(code, Ordering::Release);
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        libc::atexit(on_exit);
    }
}

/// The host itself is ending the process now, with its own code.
pub fn leaving() {
    LEAVING.store(true, Ordering::Release);
}
