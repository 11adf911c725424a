//! Signals during `zu run`: SIGINT, SIGTERM or SIGHUP stop the run on the
//! record (no further plugin call, `task.terminal` with reason
//! `interrupted:SIG...`, the Result printed, exit 128 + the signal); a second
//! signal exits at once.

use std::sync::Arc;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use zu_runtime::Cancel;

use crate::exit;

/// Watches for the signals while a run goes on.
pub struct Interrupts {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
    cancel: Arc<Cancel>,
}

fn describe(signal: i32) -> (&'static str, u8) {
    match signal {
        SIGINT => ("SIGINT", exit::SIGINT),
        SIGTERM => ("SIGTERM", exit::SIGTERM),
        _ => ("SIGHUP", exit::SIGHUP),
    }
}

impl Interrupts {
    /// Starts watching; the first signal cancels `cancel`.
    pub fn watch(cancel: Arc<Cancel>) -> std::io::Result<Interrupts> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        let asker = cancel.clone();
        let thread = std::thread::Builder::new().name("zu-signals".into()).spawn(move || {
            let mut seen = false;
            for signal in signals.forever() {
                let (name, code) = describe(signal);
                if seen {
                    eprintln!("zu: {name} again: exiting at once");
                    crate::output::leaving();
                    std::process::exit(i32::from(code));
                }
                seen = true;
                eprintln!("zu: {name}: ending the run (send it again to exit at once)");
                asker.cancel(format!("interrupted:{name}"));
            }
        })?;
        Ok(Interrupts {
            handle,
            thread: Some(thread),
            cancel,
        })
    }

    /// The exit code for the signal that ended the run, if one did.
    pub fn code(&self) -> Option<u8> {
        let reason = self.cancel.reason()?;
        Some(match reason {
            "interrupted:SIGINT" => exit::SIGINT,
            "interrupted:SIGTERM" => exit::SIGTERM,
            _ => exit::SIGHUP,
        })
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
