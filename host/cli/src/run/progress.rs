//! The progress line of `zu run` on a terminal: the current step, what the
//! run is waiting on (the model, a tool by name, the checks) and the time
//! since it started, redrawn in place on stderr and cleared at the end.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zu_plugin_api::contracts::Event;
use zu_plugin_api::events as ev;
use zu_runtime::bus::Subscriber;

/// What the line shows.
struct State {
    step: u64,
    doing: String,
    done: bool,
}

/// A bus subscriber that keeps the state, and the thread that draws it.
pub struct Progress {
    state: Arc<Mutex<State>>,
    /// stderr is a terminal: the line is drawn.
    terminal: bool,
    drawer: Option<std::thread::JoinHandle<()>>,
}

struct Watcher(Arc<Mutex<State>>);

impl Subscriber for Watcher {
    fn name(&self) -> &str {
        "progress"
    }

    fn on_event(&self, event: &Arc<Event>) -> Result<(), String> {
        let p = event.payload();
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match event.event_type() {
            ev::TURN_STARTED => {
                s.step = p.get("step").and_then(|v| v.as_u64()).unwrap_or(s.step);
                s.doing = "waiting for the model".into();
            }
            ev::TOOL_INVOKED => {
                let tool = p.get("tool").and_then(|v| v.as_str()).unwrap_or("a tool");
                s.doing = format!("calling {}", zu_runtime::display::escape(tool));
            }
            ev::TURN_COMPLETED | ev::TOOL_RETURNED => s.doing = "checking".into(),
            _ => {}
        }
        Ok(())
    }
}

impl Progress {
    /// The line's state, and the subscriber to put on the run's bus when
    /// stderr is a terminal (else nothing is drawn).
    pub fn new() -> (Progress, Option<Arc<dyn Subscriber>>) {
        use std::io::IsTerminal;
        let state = Arc::new(Mutex::new(State {
            step: 0,
            doing: "starting".into(),
            done: false,
        }));
        let terminal = std::io::stderr().is_terminal();
        let watcher = terminal.then(|| Arc::new(Watcher(state.clone())) as Arc<dyn Subscriber>);
        let progress = Progress {
            state,
            terminal,
            drawer: None,
        };
        (progress, watcher)
    }

    /// Starts drawing (on a terminal), once the run's own messages are out.
    pub fn draw(&mut self) {
        if !self.terminal {
            return;
        }
        let (state, started) = (self.state.clone(), Instant::now());
        self.drawer = std::thread::Builder::new()
            .name("zu-progress".into())
            .spawn(move || draw(&state, started))
            .ok();
    }

    /// Clears the line (before the run's last words).
    pub fn finish(mut self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).done = true;
        if let Some(d) = self.drawer.take() {
            let _ = d.join();
        }
    }
}

/// Redraws the line in place with a carriage return and spaces (no escape
/// sequences: the line reads the same without colour support), and clears
/// it at the end.
fn draw(state: &Mutex<State>, started: Instant) {
    const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
    let (mut frame, mut width) = (0usize, 0usize);
    loop {
        let line = {
            let s = state.lock().unwrap_or_else(|e| e.into_inner());
            if s.done {
                break;
            }
            let step = if s.step > 0 {
                format!("step {} · ", s.step)
            } else {
                String::new()
            };
            format!(
                "{} {step}{} · {:.1}s",
                FRAMES[frame % 4],
                s.doing,
                started.elapsed().as_secs_f64()
            )
        };
        let len = line.chars().count();
        let _ = write!(std::io::stderr(), "\r{line}{}", " ".repeat(width.saturating_sub(len)));
        width = width.max(len);
        frame += 1;
        std::thread::sleep(Duration::from_millis(120));
    }
    let _ = write!(std::io::stderr(), "\r{}\r", " ".repeat(width));
}
