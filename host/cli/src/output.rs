//! `zu` speaks for itself: its stdout carries only its own output. At start
//! the real stdout is kept on a private descriptor and descriptor 1 is
//! pointed at stderr, so anything a plugin in this process prints lands on
//! stderr, never inside zu's JSON or Results. And a plugin that calls
//! `exit()` in this process cannot borrow zu's exit codes.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::sync::{Mutex, OnceLock};

static OUT: OnceLock<Mutex<LineWriter<File>>> = OnceLock::new();

/// Takes stdout for zu alone, and guards zu's exit codes. Call once,
/// before any plugin is loaded.
pub fn claim() {
    if let Some(file) = zu_loader::guard::claim_stdout() {
        let _ = OUT.set(Mutex::new(LineWriter::new(file)));
    }
    zu_loader::guard::guard_exit(i32::from(crate::exit::PLUGIN_ENDED));
}

/// Writes `text` to zu's stdout. `false` when stdout is closed (a pipe
/// into `head`, say).
pub fn write(text: &str) -> bool {
    match OUT.get() {
        Some(out) => {
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_ok()
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_ok()
        }
    }
}

/// `write!` to zu's stdout, with a newline.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// zu itself is ending the process now (with its own code).
pub fn leaving() {
    if let Some(out) = OUT.get() {
        let _ = out.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
    zu_loader::guard::leaving();
}
