//! Work under a deadline: the host owns time. A job (a whole run, in the
//! loop) runs on a pooled worker thread while the caller waits until the
//! deadline; a job that overruns is abandoned with its worker (a thread cannot
//! be killed, only left behind) and the next job gets a fresh worker. A
//! plugin call also sees its deadline ([`current`]), so a plugin running in
//! a process of its own can be killed when it passes.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::Instant;

use zu_plugin_api::ports::panic_message;

type Job = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

/// A plugin's name as a thread-local can hold it without a destructor, so
/// it can still be read while the process exits (glibc runs thread-local
/// destructors before `atexit` handlers).
type Name = ([u8; 48], u8);

thread_local! {
    static DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    static PLUGIN: std::cell::Cell<Name> = const { std::cell::Cell::new(([0; 48], 0)) };
}

/// The deadline of the plugin call this thread is making, if any.
pub fn current() -> Option<Instant> {
    DEADLINE.with(|c| c.get())
}

/// The plugin this thread is calling, if any (to say who ended the process;
/// long names are cut).
pub fn current_plugin() -> Option<String> {
    let (bytes, len) = PLUGIN.with(|c| c.get());
    (len > 0).then(|| String::from_utf8_lossy(&bytes[..usize::from(len)]).into_owned())
}

/// Runs `f`, a call of `plugin`, with `deadline` as its [`current`] deadline.
pub fn within<T>(deadline: Instant, plugin: &str, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Instant>, Name);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|c| c.set(self.0));
            PLUGIN.with(|c| c.set(self.1));
        }
    }
    let mut name: Name = ([0; 48], 0);
    let mut len = plugin.len().min(48);
    while !plugin.is_char_boundary(len) {
        len -= 1;
    }
    name.0[..len].copy_from_slice(&plugin.as_bytes()[..len]);
    name.1 = len as u8;
    let _restore = Restore(
        DEADLINE.with(|c| c.replace(Some(deadline))),
        PLUGIN.with(|c| c.replace(name)),
    );
    f()
}

/// Why work under a deadline (a job here, a plugin call in the loop)
/// produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The deadline passed first; the call was abandoned.
    #[error("the call did not finish before its deadline")]
    TimedOut,
    /// The call panicked (in host code; plugins catch their own panics).
    #[error("the call panicked: {0}")]
    Panicked(String),
    /// The caller was asked to stop (a signal) before the call finished.
    #[error("the call was cancelled: {0}")]
    Cancelled(String),
}

/// A request to stop, made from another thread (a signal handler): its
/// reason, and a wake-up for whoever waits on a deadline meanwhile.
#[derive(Default)]
pub struct Cancel {
    reason: OnceLock<String>,
    waiters: Mutex<Vec<Thread>>,
}

impl Cancel {
    /// A request not made yet.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Asks to stop, for `reason` (the first reason wins).
    pub fn cancel(&self, reason: impl Into<String>) {
        let _ = self.reason.set(reason.into());
        for t in self.waiters.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.unpark();
        }
    }

    /// Why, once asked.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    fn wake(&self, thread: Thread) {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).push(thread);
    }
}

struct Shared {
    job: Mutex<Option<Job>>,
    result: Mutex<Option<Result<Box<dyn Any + Send>, String>>>,
    has_job: AtomicBool,
    has_result: AtomicBool,
    abandoned: AtomicBool,
    caller: Mutex<Option<Thread>>,
}

struct Worker {
    shared: Arc<Shared>,
    thread: Thread,
}

/// Runs closures on a reusable worker thread, each under a deadline. Idle
/// workers go back to a small process-wide pool, so a short run does not pay
/// for starting a thread.
#[derive(Default)]
pub struct DeadlineRunner {
    worker: Option<Worker>,
}

/// At most this many idle workers are kept for later runners.
const POOL_SIZE: usize = 32;

static IDLE: Mutex<Vec<Worker>> = Mutex::new(Vec::new());

/// How long a thread spins on a flag before it parks: long enough that a
/// short run, or the next job of a busy caller, needs no wake-up (a futex
/// wake costs tens of microseconds on a small VM), short enough to waste little.
const SPIN: std::time::Duration = std::time::Duration::from_micros(30);

/// Spins on `flag` for up to [`SPIN`], then returns whether it was set (the
/// caller parks if not).
fn wait_briefly(flag: &AtomicBool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if flag.load(Ordering::Acquire) {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return flag.load(Ordering::Acquire);
        }
    }
}

fn worker_loop(shared: Arc<Shared>) {
    loop {
        while !wait_briefly(&shared.has_job) {
            if shared.abandoned.load(Ordering::Acquire) {
                return;
            }
            thread::park();
        }
        if shared.abandoned.load(Ordering::Acquire) {
            return;
        }
        shared.has_job.store(false, Ordering::Release);
        let job = shared.job.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(job) = job else { continue };
        let out = catch_unwind(AssertUnwindSafe(job)).map_err(|p| panic_message(&*p));
        if shared.abandoned.load(Ordering::Acquire) {
            return; // nobody waits for this result any more
        }
        *shared.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
        shared.has_result.store(true, Ordering::Release);
        if let Some(caller) = &*shared.caller.lock().unwrap_or_else(|p| p.into_inner()) {
            caller.unpark();
        }
    }
}

impl DeadlineRunner {
    /// A runner; its worker thread starts on the first call.
    pub fn new() -> Self {
        DeadlineRunner::default()
    }

    fn worker(&mut self) -> &Worker {
        if self.worker.is_none() {
            self.worker = IDLE.lock().unwrap_or_else(|p| p.into_inner()).pop();
        }
        self.worker.get_or_insert_with(|| {
            let shared = Arc::new(Shared {
                job: Mutex::new(None),
                result: Mutex::new(None),
                has_job: AtomicBool::new(false),
                has_result: AtomicBool::new(false),
                abandoned: AtomicBool::new(false),
                caller: Mutex::new(None),
            });
            let for_thread = shared.clone();
            let handle = thread::Builder::new()
                .name("zu-plugin-call".into())
                .spawn(move || worker_loop(for_thread))
                .expect("the OS can start a thread");
            Worker {
                shared,
                thread: handle.thread().clone(),
            }
        })
    }

    /// Runs `f` on the worker and waits for it until `deadline`.
    pub fn call<T: Send + 'static>(
        &mut self,
        deadline: Instant,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CallError> {
        self.call_until(deadline, None, f)
    }

    /// [`DeadlineRunner::call`] that also stops waiting when `cancel` is
    /// asked (the job is then abandoned like an overrun one).
    pub fn call_until<T: Send + 'static>(
        &mut self,
        deadline: Instant,
        cancel: Option<&Cancel>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CallError> {
        if Instant::now() >= deadline {
            return Err(CallError::TimedOut);
        }
        let me = thread::current();
        if let Some(c) = cancel {
            c.wake(me.clone());
        }
        let worker = self.worker();
        let shared = worker.shared.clone();
        {
            let mut caller = shared.caller.lock().unwrap_or_else(|p| p.into_inner());
            if caller.as_ref().map(Thread::id) != Some(me.id()) {
                *caller = Some(me);
            }
        }
        *shared.job.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Box::new(move || Box::new(f()) as Box<dyn Any + Send>));
        shared.has_job.store(true, Ordering::Release);
        worker.thread.unpark();
        while !wait_briefly(&shared.has_result) {
            let now = Instant::now();
            let cancelled = cancel.and_then(Cancel::reason);
            if now >= deadline || cancelled.is_some() {
                shared.abandoned.store(true, Ordering::Release);
                if let Some(w) = self.worker.take() {
                    w.thread.unpark();
                }
                return Err(cancelled.map_or(CallError::TimedOut, |r| CallError::Cancelled(r.to_owned())));
            }
            thread::park_timeout(deadline - now);
        }
        shared.has_result.store(false, Ordering::Release);
        let out = shared
            .result
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("a result was signalled");
        match out {
            Ok(value) => Ok(*value.downcast::<T>().expect("the job returns T")),
            Err(message) => Err(CallError::Panicked(message)),
        }
    }
}

impl Drop for DeadlineRunner {
    fn drop(&mut self) {
        let Some(w) = self.worker.take() else { return };
        let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_SIZE {
            idle.push(w);
        } else {
            w.shared.abandoned.store(true, Ordering::Release);
            w.thread.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn quick_calls_return_their_values_in_order() {
        let mut r = DeadlineRunner::new();
        for i in 0..1000 {
            assert_eq!(
                r.call(Instant::now() + Duration::from_secs(5), move || i * 2),
                Ok(i * 2)
            );
        }
    }

    #[test]
    fn an_overrunning_call_times_out_and_the_next_call_gets_a_fresh_worker() {
        let mut r = DeadlineRunner::new();
        let start = Instant::now();
        let out = r.call(start + Duration::from_millis(100), || {
            thread::sleep(Duration::from_secs(30))
        });
        assert_eq!(out, Err(CallError::TimedOut));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(r.call(Instant::now() + Duration::from_secs(5), || "again"), Ok("again"));
    }

    #[test]
    fn a_panicking_call_is_an_error_and_the_worker_survives() {
        let mut r = DeadlineRunner::new();
        let out: Result<(), _> = r.call(Instant::now() + Duration::from_secs(5), || panic!("host bug"));
        assert_eq!(out, Err(CallError::Panicked("host bug".into())));
        assert_eq!(r.call(Instant::now() + Duration::from_secs(5), || 7), Ok(7));
    }

    #[test]
    fn a_cancel_from_another_thread_stops_the_wait() {
        let cancel = Arc::new(Cancel::new());
        let asker = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            asker.cancel("interrupted:SIGINT");
        });
        let mut r = DeadlineRunner::new();
        let start = Instant::now();
        let out = r.call_until(start + Duration::from_secs(30), Some(&cancel), || {
            thread::sleep(Duration::from_secs(30))
        });
        assert_eq!(out, Err(CallError::Cancelled("interrupted:SIGINT".into())));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_past_deadline_fails_without_running() {
        let mut r = DeadlineRunner::new();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let out = r.call(Instant::now() - Duration::from_millis(1), move || {
            flag.store(true, Ordering::SeqCst)
        });
        assert_eq!(out, Err(CallError::TimedOut));
        assert!(!ran.load(Ordering::SeqCst));
    }
}
