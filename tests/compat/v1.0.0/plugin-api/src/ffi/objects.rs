//! The FFI trait objects, one per plugin kind, plus the run-context callback
//! the host hands to detectors, validators and tools. Dynamic data is JSON text.
//! Add methods only after the `last_prefix_field` of a trait.

#![allow(non_local_definitions, non_camel_case_types)]

use abi_stable::{
    sabi_trait,
    sabi_types::RRef,
    std_types::{RBox, ROption, RStr, RString},
    StableAbi,
};

use super::{FfiKind, FfiResult};
use crate::version::Kind;

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

pub type ToolObject = ToolFfi_TO<'static, RBox<()>>;
pub type ProviderObject = ProviderFfi_TO<'static, RBox<()>>;
pub type DetectorObject = DetectorFfi_TO<'static, RBox<()>>;
pub type ValidatorObject = ValidatorFfi_TO<'static, RBox<()>>;
pub type BackendObject = BackendFfi_TO<'static, RBox<()>>;
pub type SinkObject = SinkFfi_TO<'static, RBox<()>>;
pub type PolicyObject = PolicyFfi_TO<'static, RBox<()>>;
pub type TriggerObject = TriggerFfi_TO<'static, RBox<()>>;

macro_rules! kinds {
    ($($object:ty => $kind:expr),* $(,)?) => {
        $(impl FfiKind for $object { const KIND: Kind = $kind; })*
    };
}

kinds! {
    ToolObject => Kind::Tools,
    ProviderObject => Kind::Providers,
    DetectorObject => Kind::Detectors,
    ValidatorObject => Kind::Validators,
    BackendObject => Kind::Backends,
    SinkObject => Kind::Sinks,
    PolicyObject => Kind::Policies,
    TriggerObject => Kind::Triggers,
}
