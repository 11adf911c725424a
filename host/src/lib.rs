//! The Zu plugin host as a library: discover plugin libraries, check and load
//! them into a [`Registry`] (or register native Rust plugins in-process), and
//! record a typed [`LoadFailure`] for everything refused.
//!
//! ```no_run
//! use zu_host::{Loader, Registry};
//!
//! let mut registry = Registry::new();
//! let mut loader = Loader::new();
//! loader.load_dir(&mut registry, "plugins".as_ref())?;
//! for failure in registry.failures() {
//!     eprintln!("[{}] {}", failure.error.code(), failure.error);
//! }
//! # Ok::<(), zu_host::HostError>(())
//! ```

pub mod bus;
pub mod deadline;
pub mod discovery;
pub mod error;
pub mod loader;
pub mod memory_sink;
pub mod projections;
pub mod registry;
pub mod run;
pub mod view;

pub use bus::{BusError, EventBus, LoggedEvent, Subscriber, SubscriberFailure};
pub use error::{HostError, LoadError};
pub use loader::Loader;
pub use memory_sink::MemorySink;
pub use projections::SessionStore;
pub use registry::{Entry, LoadFailure, PluginInfo, PluginObject, Registry};
pub use run::{run_task, Containment, RunError, RunOptions, RunView};
pub use zu_plugin_api as api;
