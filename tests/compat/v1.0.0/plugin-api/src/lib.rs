//! Everything a Zu plugin author needs: the contracts of a run, the port traits
//! of the eight plugin kinds, and one export macro. No `unsafe`, no FFI types.
//!
//! A complete plugin library (`crate-type = ["cdylib"]`, one dependency):
//!
//! ```
//! use zu_plugin_api::prelude::*;
//!
//! /// A tool that echoes its arguments back.
//! pub struct Echo;
//!
//! impl Plugin for Echo {
//!     const NAME: &'static str = "echo";
//!     fn new(_config: Value) -> Result<Self, PluginError> {
//!         Ok(Echo)
//!     }
//! }
//!
//! impl Tool for Echo {
//!     fn call(&self, _ctx: &dyn RunContext, args: JsonObject) -> Result<JsonObject, PluginError> {
//!         Ok(args)
//!     }
//! }
//!
//! zu_plugin_api::export_plugins! { tools: [Echo] }
//! ```
//!
//! Build it with `cargo build`, drop the `.so`/`.dylib`/`.dll` into a plugin
//! directory, and `zu plugins --plugins DIR` lists it. The macro records, per
//! plugin, the interface version of its kind this crate provides
//! ([`version::INTERFACE_VERSION`]); the host accepts it under the semver caret
//! rule and checks the real FFI layout too.
//!
//! Panics inside any plugin method, constructor or destructor are caught on
//! the plugin's side and reach the host as [`PluginError::Panicked`]. Build
//! plugins with the default `panic = "unwind"`: the host refuses a library
//! built with `panic = "abort"`, because it could not contain its panics.

#![deny(missing_docs)]

pub mod content;
pub mod contracts;
pub mod events;
pub mod filter;
pub mod ports;
pub mod version;

#[doc(hidden)]
pub mod ffi;

pub use ports::PluginError;

/// What a plugin author imports: `use zu_plugin_api::prelude::*;`.
pub mod prelude {
    pub use crate::content::{Action, ActionKind, ContentPart, Observation};
    pub use crate::contracts::{Budget, Event, JsonObject, Result as RunResult, Status, TaskSpec};
    pub use crate::filter::{EventFilter, FilterField, StoredEvent};
    pub use crate::ports::{
        Capabilities, Detector, Envelope, EventSink, Finish, ModelProvider, ModelRequest, ModelResponse, Plugin,
        PluginError, Policy, RunContext, SandboxBackend, Scope, Severity, Tool, ToolCall, ToolSpec, Trigger,
        TriggerEvent, Validator, Verdict, CAP_FS_READ, CAP_FS_WRITE, CAP_NET, CAP_SANDBOX, CAP_SUBPROCESS, EGRESS_OPEN,
    };
    pub use serde_json::{json, Value};
}

/// Exports the plugins of this library, grouped by kind.
///
/// ```text
/// zu_plugin_api::export_plugins! {
///     tools: [FileRead, HttpFetch],
///     detectors: [EmptyDetector],
/// }
/// ```
///
/// Kinds: `providers`, `tools`, `detectors`, `validators`, `backends`,
/// `sinks`, `policies`, `triggers`. Each type implements [`ports::Plugin`]
/// and the port trait of its kind. Use the macro once per library.
#[macro_export]
macro_rules! export_plugins {
    ($($kind:ident : [$($plugin:ty),* $(,)?]),* $(,)?) => {
        $crate::__export_declarations! {
            ::std::vec![$($($crate::__declare!($kind, $plugin)),*),*]
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __declare {
    (providers, $p:ty) => {
        $crate::ffi::Declaration::of::<$crate::ffi::ProviderObject, $p>()
    };
    (tools, $p:ty) => {
        $crate::ffi::Declaration::of::<$crate::ffi::ToolObject, $p>()
    };
    (detectors, $p:ty) => {
        $crate::ffi::Declaration::of::<$crate::ffi::DetectorObject, $p>()
    };
    (validators, $p:ty) => {
        $crate::ffi::Declaration::of::<$crate::ffi::ValidatorObject, $p>()
    };
    (backends, $p:ty) => {
        $crate::ffi::Declaration::of::<$crate::ffi::BackendObject, $p>()
    };
    (sinks, $p:ty) => {
        $crate::ffi::Declaration::of::<$crate::ffi::SinkObject, $p>()
    };
    (policies, $p:ty) => {
        $crate::ffi::Declaration::of::<$crate::ffi::PolicyObject, $p>()
    };
    (triggers, $p:ty) => {
        $crate::ffi::Declaration::of::<$crate::ffi::TriggerObject, $p>()
    };
    ($other:ident, $p:ty) => {
        ::std::compile_error!(::std::concat!(
            "unknown plugin kind `",
            ::std::stringify!($other),
            "`: use providers, tools, detectors, validators, backends, sinks, policies or triggers"
        ))
    };
}

/// Exports a library whose declarations are built by an expression of type
/// `Vec<ffi::Declaration>`. `export_plugins!` is the way to use it; the host's
/// test fixtures use it directly to build deliberately wrong declarations.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_declarations {
    ($declarations:expr) => {
        const _: () = {
            extern "C" fn __zu_declarations(
            ) -> $crate::ffi::FfiResult<$crate::ffi::abi_stable::std_types::RVec<$crate::ffi::Declaration>> {
                $crate::ffi::collect_declarations(|| $declarations)
            }

            fn __zu_root_module() -> $crate::ffi::ZuRootModule_Ref {
                // Evaluated in the plugin's crate, so it reflects how the
                // plugin itself was built.
                $crate::ffi::root_module(::std::cfg!(panic = "unwind"), __zu_declarations)
            }

            extern "C" fn __zu_load_root_module() -> $crate::ffi::abi_stable::library::RootModuleResult {
                $crate::ffi::abi_stable::library::__call_root_module_loader(__zu_root_module)
            }

            #[unsafe(no_mangle)]
            pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::ffi::abi_stable::library::LibHeader =
                $crate::ffi::lib_header(__zu_load_root_module);
        };
    };
}
