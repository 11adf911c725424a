//! The FFI trait objects, one per plugin kind, plus the run-context callback
//! the host hands to detectors, validators and tools. Dynamic data is JSON text.
//! Add methods only after the `last_prefix_field` of a trait.

#![allow(non_local_definitions, non_camel_case_types)]

use abi_stable::{
    sabi_trait,
    sabi_types::RRef,
    std_types::{ROption, RStr, RString},
    StableAbi,
};

use super::FfiResult;

/// When a detector runs, in FFI form.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, StableAbi)]
pub enum FfiScope {
    PerObservation,
    PerTurn,
    OnFinal,
}

/// The run as a plugin reads it, served by the host.
#[sabi_trait]
pub trait HostContextFfi {
    /// The task spec as JSON.
    fn ffi_spec(&self) -> RString;
    /// The current observation as JSON, if any.
    fn ffi_observation(&self) -> ROption<RString>;
    /// Events on the run's log.
    fn ffi_event_count(&self) -> u64;
    /// `[StoredEvent]` JSON for a filter (JSON object), limit and after_seq.
    #[sabi(last_prefix_field)]
    fn ffi_query(&self, filter_json: RStr<'_>, limit: ROption<u64>, after_seq: u64) -> FfiResult<RString>;
}

/// A borrowed run context crossing into a plugin call.
pub type HostContext<'a> = HostContextFfi_TO<'a, RRef<'a, ()>>;

#[cfg(not(feature = "__fixture_layout_skew"))]
#[sabi_trait]
pub trait ToolFfi: Send + Sync {
    fn ffi_schema(&self) -> RString;
    fn ffi_prompt_fragment(&self) -> RString;
    #[sabi(last_prefix_field)]
    fn ffi_call(&self, ctx: HostContext<'_>, args_json: RStr<'_>) -> FfiResult<RString>;
}

/// The tool object as a test fixture compiles it: one extra method up front
/// shifts every vtable slot, so the host must refuse it (`layout_mismatch`).
#[cfg(feature = "__fixture_layout_skew")]
#[sabi_trait]
pub trait ToolFfi: Send + Sync {
    fn ffi_skew(&self) -> u64 {
        0
    }
    fn ffi_schema(&self) -> RString;
    fn ffi_prompt_fragment(&self) -> RString;
    #[sabi(last_prefix_field)]
    fn ffi_call(&self, ctx: HostContext<'_>, args_json: RStr<'_>) -> FfiResult<RString>;
}

#[sabi_trait]
pub trait ProviderFfi: Send + Sync {
    fn ffi_capabilities(&self) -> RString;
    fn ffi_model(&self) -> ROption<RString>;
    fn ffi_complete(&self, request_json: RStr<'_>) -> FfiResult<RString>;
    /// A continued conversation: `{"conversation", "base", "messages": [new],
    /// "tools": [..] | null (unchanged), "params"}`. Fails with `Resync` if the
    /// plugin does not hold `base` messages of that conversation.
    #[sabi(last_prefix_field)]
    fn ffi_complete_delta(&self, delta_json: RStr<'_>) -> FfiResult<RString>;
}

#[sabi_trait]
pub trait DetectorFfi: Send + Sync {
    fn ffi_scope(&self) -> FfiScope;
    /// `Some(verdict JSON)` when the detector fires.
    #[sabi(last_prefix_field)]
    fn ffi_inspect(&self, ctx: HostContext<'_>) -> FfiResult<ROption<RString>>;
}

#[sabi_trait]
pub trait ValidatorFfi: Send + Sync {
    #[sabi(last_prefix_field)]
    fn ffi_check(&self, result_json: RStr<'_>, ctx: HostContext<'_>) -> FfiResult<ROption<RString>>;
}

#[sabi_trait]
pub trait BackendFfi: Send + Sync {
    fn ffi_launch(&self, spec_json: RStr<'_>) -> FfiResult<RString>;
    fn ffi_exec(&self, sandbox_json: RStr<'_>, call_json: RStr<'_>) -> FfiResult<RString>;
    #[sabi(last_prefix_field)]
    fn ffi_destroy(&self, sandbox_json: RStr<'_>) -> FfiResult<()>;
}

#[sabi_trait]
pub trait SinkFfi: Send + Sync {
    fn ffi_append(&self, event_json: RStr<'_>) -> FfiResult<()>;
    fn ffi_query(&self, filter_json: RStr<'_>, limit: ROption<u64>, after_seq: u64) -> FfiResult<RString>;
    fn ffi_count(&self, filter_json: RStr<'_>) -> FfiResult<u64>;
    #[sabi(last_prefix_field)]
    fn ffi_close(&self) -> FfiResult<()>;
    /// A JSON array of events, stored at once.
    fn ffi_append_batch(&self, events_json: RStr<'_>) -> FfiResult<()>;
}

#[sabi_trait]
pub trait PolicyFfi: Send + Sync {
    fn ffi_capabilities(&self) -> RString;
    fn ffi_model(&self) -> ROption<RString>;
    #[sabi(last_prefix_field)]
    fn ffi_act(&self, observation_json: RStr<'_>, tools_json: RStr<'_>) -> FfiResult<RString>;
}

#[sabi_trait]
pub trait TriggerFfi: Send + Sync {
    fn ffi_source(&self) -> RString;
    #[sabi(last_prefix_field)]
    fn ffi_next_event(&self) -> FfiResult<ROption<RString>>;
}

macro_rules! kind_modules {
    ($($(#[$doc:meta])* $Kind:ident { name: $name:ident, object: $o:ident, getter: $g:ident, version: $v:literal,
        port: $port:ident, ffi: $ffi:ident, export: $e:ident, import: $import:path }),* $(,)?) => {
        /// One module per kind: its FFI object type and how a plugin of that
        /// kind is declared and imported.
        pub mod kind {
            $($(#[$doc])*
            pub mod $name {
                use std::sync::Arc;

                use abi_stable::std_types::RBox;

                use crate::ffi::{Declaration, FfiKind};
                use crate::ports::{Plugin, $port};
                use crate::version::Kind;

                /// The FFI object that carries a plugin of this kind.
                pub type Object = crate::ffi::$ffi<'static, RBox<()>>;

                impl FfiKind for Object {
                    const KIND: Kind = Kind::$Kind;
                    type Port = dyn $port;
                    fn import(self) -> Arc<dyn $port> {
                        #[allow(unused_imports)]
                        use crate::ffi::ImportedProvider;
                        Arc::new($import(self))
                    }
                }

                /// The declaration of plugin `T` of this kind. The bound names
                /// the author's trait, so a plugin listed under the wrong kind
                /// is reported in the author's terms.
                pub fn declare<T: Plugin + $port>() -> Declaration {
                    Declaration::of::<Object, T>()
                }
            })*
        }
    };
}

crate::__for_each_kind!(kind_modules);
