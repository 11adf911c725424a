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
//!
//! Embedding: register native Rust plugins in-process, run a task, read its log.
//!
//! ```
//! use std::sync::Arc;
//! use zu_host::api::prelude::*;
//! use zu_host::api::filter::FilterField;
//! use zu_host::{run_task, EventBus, Registry, RunOptions};
//!
//! struct Answer;
//! impl ModelProvider for Answer {
//!     fn complete(&self, _: &ModelRequest) -> Result<ModelResponse, PluginError> {
//!         Ok(ModelResponse { text: Some(r#"{"answer": 42}"#.into()), ..Default::default() })
//!     }
//! }
//!
//! let registry = Registry::new(); // add tools, detectors, validators with register_native
//! let bus = Arc::new(EventBus::new());
//! let spec = TaskSpec::new("what is the answer?");
//! let result = run_task(&spec, Arc::new(Answer), &registry, &bus, &RunOptions::default())?;
//! assert_eq!(result.status, Status::Success);
//! assert_eq!(result.value.unwrap()["answer"], 42);
//! let completed = EventFilter::all().with(FilterField::Type, Some("harness.task.completed"));
//! assert_eq!(bus.count(&completed)?, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
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
