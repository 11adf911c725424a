//! The Zu runtime, as an embedder links it: the [`Registry`] of plugins by
//! kind, the [`EventBus`] over one canonical sink (the in-memory
//! [`MemorySink`] by default), projections, the scoped view of events, and
//! the loop ([`run_task`]). No library is opened here: plugins arrive
//! registered in-process, or through `zu-loader`.
//!
//! Register native Rust plugins, run a task, read its log:
//!
//! ```
//! use std::sync::Arc;
//! use zu_runtime::api::prelude::*;
//! use zu_runtime::{run_task, EventBus, Registry, RunOptions};
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

#![forbid(unsafe_code)]

pub mod bus;
pub mod cost;
pub mod deadline;
pub mod display;
pub mod egress;
pub mod error;
pub mod memory_sink;
pub mod pipeline;
pub mod projections;
pub mod registry;
pub mod run;
pub mod track;
pub mod view;

pub use bus::{BusError, EventBus, Subscriber, SubscriberFailure};
pub use cost::{CostSummary, Prices};
pub use error::LoadError;
pub use memory_sink::{LoggedEvent, MemorySink};
pub use pipeline::{run_pipeline, PipelinePhase, PipelineResult};
pub use projections::SessionStore;
pub use registry::{Entry, LoadFailure, PluginInfo, PluginObject, Registry};
pub use run::{
    resume_task, run_task, Cancel, Checks, Containment, ResumeError, RunError, RunOptions, RunView, Shaping, Strategy,
};
pub use track::{Track, TrackStep};
pub use zu_plugin_api as api;
