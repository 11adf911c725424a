//! The library boundary, hidden from plugin authors: the root module a plugin
//! library exports, the per-plugin declarations it lists, and the glue that
//! carries each port across as JSON with every panic caught on the plugin side.
//!
//! Only the export macro, `testing`, and the loader (`zu-loader`) use this module.

#![allow(missing_docs, non_camel_case_types)]

mod conversations;
mod export;
mod import;
mod objects;

use std::panic::{catch_unwind, AssertUnwindSafe};

pub use abi_stable;
use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    marker_type::ErasedObject,
    package_version_strings,
    pointer_trait::TransmuteElement,
    prefix_type::PrefixTypeTrait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RStr, RString, RVec},
    type_layout::TypeLayout,
    StableAbi,
};

pub use conversations::{Conversations, MAX_CONVERSATIONS};
pub use export::Exports;
pub use import::{context_bridge, ContextBridge, ImportedProvider};
pub use objects::kind;
pub use objects::*;

pub(crate) use crate::ports::to_json_capped;
use crate::ports::{panic_message, Envelope, Plugin, PluginError};
use crate::version::Kind;

/// The symbol every abi_stable library exports its header under. The export
/// macro spells it out literally (it must be an identifier there); a unit test
/// keeps the two in step with abi_stable.
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// How an error crossed the boundary.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, StableAbi)]
pub enum FfiErrorKind {
    Failed,
    /// `message` is the `SecurityBlock` as JSON.
    SecurityBlock,
    InvalidInput,
    Panicked,
    /// `message` is the limit in bytes.
    TooLarge,
    /// A continued conversation the plugin does not hold: resend it whole.
    Resync,
}

/// A [`PluginError`] in FFI form.
#[repr(C)]
#[derive(Debug, Clone, StableAbi)]
pub struct FfiError {
    pub kind: FfiErrorKind,
    pub message: RString,
}

pub type FfiResult<T> = RResult<T, FfiError>;

impl From<PluginError> for FfiError {
    fn from(e: PluginError) -> Self {
        let (kind, message) = match e {
            PluginError::Failed(m) => (FfiErrorKind::Failed, m),
            e @ PluginError::ProcessEnded(_) => (FfiErrorKind::Failed, e.to_string()),
            PluginError::SecurityBlock(b) => (
                FfiErrorKind::SecurityBlock,
                serde_json::to_string(&b).unwrap_or_else(|_| b.message.clone()),
            ),
            PluginError::InvalidInput(m) => (FfiErrorKind::InvalidInput, m),
            PluginError::Panicked(m) => (FfiErrorKind::Panicked, m),
            PluginError::TooLarge { limit } => (FfiErrorKind::TooLarge, limit.to_string()),
        };
        FfiError {
            kind,
            message: message.into(),
        }
    }
}

impl From<FfiError> for PluginError {
    fn from(e: FfiError) -> Self {
        let m = e.message.into_string();
        match e.kind {
            FfiErrorKind::Failed | FfiErrorKind::Resync => PluginError::Failed(m),
            FfiErrorKind::SecurityBlock => match serde_json::from_str(&m) {
                Ok(block) => PluginError::SecurityBlock(block),
                Err(_) => PluginError::security_block("security_block", None, m),
            },
            FfiErrorKind::InvalidInput => PluginError::InvalidInput(m),
            FfiErrorKind::Panicked => PluginError::Panicked(m),
            FfiErrorKind::TooLarge => PluginError::TooLarge {
                limit: m.parse().unwrap_or(crate::ports::MAX_OBSERVATION_BYTES),
            },
        }
    }
}

/// One turn of a continued conversation, as `ffi_complete_delta` carries it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Delta {
    pub conversation: u64,
    /// How many messages of the conversation the plugin already holds.
    pub base: usize,
    /// The messages after those.
    pub messages: Vec<serde_json::Value>,
    /// The tool schemas, when they changed since the previous turn.
    pub tools: Option<Vec<serde_json::Value>>,
    pub params: crate::contracts::JsonObject,
    /// The request's `time_left_ms`.
    #[serde(default)]
    pub time_left_ms: Option<u64>,
}

/// Runs `f`, turning a panic into [`PluginError::Panicked`].
pub fn catch<T>(f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(PluginError::Panicked(panic_message(&*payload))),
    }
}

/// Runs `f` on the plugin's side of the boundary: panics and errors become an
/// [`FfiError`], never an unwind.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T, PluginError>) -> FfiResult<T> {
    catch(f).map_err(FfiError::from).into()
}

pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, PluginError> {
    serde_json::to_string(value).map_err(|e| PluginError::failed(format!("cannot encode JSON: {e}")))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, PluginError> {
    serde_json::from_str(text).map_err(|e| PluginError::invalid(format!("malformed {what}: {e}")))
}

/// One plugin in a library: what the host checks before it calls anything.
///
/// The constructor takes config JSON and returns the kind's trait object
/// erased to `RBox<ErasedObject>`, which keeps its own destructor, so a
/// refused object is still freed by the plugin's code.
///
/// Fields are private and a declaration is only built by [`Declaration::of`],
/// so the layout it reports is always the layout of the object it constructs.
#[repr(C)]
#[derive(StableAbi)]
pub struct Declaration {
    kind: RStr<'static>,
    name: RStr<'static>,
    interface_version: RStr<'static>,
    tier: u32,
    capabilities: RVec<RStr<'static>>,
    egress: RVec<RStr<'static>>,
    layout: &'static TypeLayout,
    construct: extern "C" fn(config_json: RStr<'_>) -> FfiResult<RBox<ErasedObject>>,
}

/// An FFI trait object type that carries one plugin kind.
pub trait FfiKind: StableAbi + Sized + 'static {
    /// The kind the object implements.
    const KIND: Kind;
    /// The author's trait of that kind, as the host holds it.
    type Port: ?Sized + Send + Sync;
    /// The host's handle on a checked object: the port trait, served
    /// across the boundary.
    fn import(self) -> std::sync::Arc<Self::Port>;
}

impl Declaration {
    /// The declaration of plugin `T` exported as an object `O`, stamped with
    /// the interface version this crate provides for `O`'s kind.
    pub fn of<O: FfiKind, T: Exports<O>>() -> Self {
        Self::with_interface_version::<O, T>(O::KIND.interface_version())
    }

    /// Like [`Declaration::of`] with an explicit interface version. Exists for
    /// the host's test fixtures (a plugin from a future or garbled interface).
    pub fn with_interface_version<O: FfiKind, T: Exports<O>>(version: &'static str) -> Self {
        Self::with_kind_and_version::<O, T>(O::KIND.as_str(), version)
    }

    /// Like [`Declaration::of`] with an explicit kind name and version. Exists
    /// for the host's test fixtures (a kind the host does not know).
    pub fn with_kind_and_version<O: FfiKind, T: Exports<O>>(kind: &'static str, version: &'static str) -> Self {
        let Envelope {
            tier,
            capabilities,
            egress,
        } = T::ENVELOPE;
        Declaration {
            kind: kind.into(),
            name: T::NAME.into(),
            interface_version: version.into(),
            tier,
            capabilities: capabilities.iter().map(|c| RStr::from(*c)).collect(),
            egress: egress.iter().map(|c| RStr::from(*c)).collect(),
            layout: O::LAYOUT,
            construct: construct::<O, T>,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind.as_str()
    }
    pub fn name(&self) -> &'static str {
        self.name.as_str()
    }
    pub fn interface_version(&self) -> &'static str {
        self.interface_version.as_str()
    }
    pub fn tier(&self) -> u32 {
        self.tier
    }
    pub fn capabilities(&self) -> Vec<String> {
        self.capabilities.iter().map(|c| c.as_str().to_owned()).collect()
    }
    pub fn egress(&self) -> Vec<String> {
        self.egress.iter().map(|c| c.as_str().to_owned()).collect()
    }
    /// The layout of the object this plugin constructs, as the plugin compiled it.
    pub fn layout(&self) -> &'static TypeLayout {
        self.layout
    }

    /// Calls the plugin's constructor.
    ///
    /// # Safety
    /// The caller must have checked that [`Declaration::layout`] is compatible
    /// with `O::LAYOUT` as the host compiled it, and that the kind is `O::KIND`.
    pub unsafe fn construct<O: FfiKind>(&self, config_json: &str) -> Result<O, PluginError> {
        let erased = (self.construct)(config_json.into()).into_result()?;
        // SAFETY: the declaration was built by `of::<O, T>` in the plugin, so
        // the box holds an `O` whose layout the caller has checked.
        let typed: RBox<O> = unsafe { erased.transmute_element::<O>() };
        Ok(RBox::into_inner(typed))
    }
}

extern "C" fn construct<O: FfiKind, T: Exports<O>>(config_json: RStr<'_>) -> FfiResult<RBox<ErasedObject>> {
    guarded(|| {
        let config: serde_json::Value = if config_json.trim().is_empty() {
            serde_json::Value::Null
        } else {
            from_json(config_json.as_str(), "plugin config")?
        };
        let object = <T as Plugin>::new(config)?.into_object();
        // SAFETY: RBox keeps the vtable (and so the destructor) of `O`; the
        // host only turns it back into `O` after checking kind and layout.
        Ok(unsafe { RBox::new(object).transmute_element::<ErasedObject>() })
    })
}

/// The root module of a Zu plugin library.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ZuRootModule_Ref)))]
#[sabi(missing_field(panic))]
pub struct ZuRootModule {
    /// `cfg!(panic = "unwind")` as the plugin was built; a plugin that aborts
    /// on panic cannot be contained and is refused.
    pub unwinds: bool,
    /// The zu-plugin-api version the plugin was built against.
    pub api_version: RStr<'static>,
    /// The plugins in the library. New fields go after this one.
    #[sabi(last_prefix_field)]
    pub declarations: extern "C" fn() -> FfiResult<RVec<Declaration>>,
}

impl RootModule for ZuRootModule_Ref {
    declare_root_module_statics! {ZuRootModule_Ref}
    const BASE_NAME: &'static str = "zu_plugin";
    const NAME: &'static str = "zu_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

pub use crate::version::API_VERSION;

/// Builds the root module; called by the code `export_plugins!` generates,
/// inside the plugin. Also installs a one-line panic hook in the plugin's copy
/// of std: its panics are caught and reported to the host as errors, so a
/// backtrace on stderr would only be noise.
pub fn root_module(unwinds: bool, declarations: extern "C" fn() -> FfiResult<RVec<Declaration>>) -> ZuRootModule_Ref {
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "zu plugin panicked{at}: {} (caught; the host receives it as an error)",
            panic_message(info.payload())
        );
    }));
    ZuRootModule {
        unwinds,
        api_version: API_VERSION.into(),
        declarations,
    }
    .leak_into_prefix()
}

/// Builds the declaration list with panics caught.
pub fn collect_declarations(f: impl FnOnce() -> Vec<Declaration>) -> FfiResult<RVec<Declaration>> {
    guarded(|| Ok(f().into()))
}

/// The library header the export macro places under [`ROOT_MODULE_SYMBOL`].
pub const fn lib_header(
    loader: extern "C" fn() -> abi_stable::library::RootModuleResult,
) -> abi_stable::library::LibHeader {
    // SAFETY: `loader` is generated by `export_plugins!`, which only ever
    // passes a function returning a `ZuRootModule_Ref`.
    unsafe {
        abi_stable::library::LibHeader::from_constructor::<ZuRootModule_Ref>(
            loader,
            abi_stable::library::CheckTypeLayout::Yes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_module_symbol_matches_abi_stable() {
        assert_eq!(ROOT_MODULE_SYMBOL, abi_stable::library::ROOT_MODULE_LOADER_NAME);
    }

    #[test]
    fn catch_turns_a_panic_into_an_error() {
        let r: Result<(), _> = catch(|| panic!("boom {}", 7));
        assert_eq!(r, Err(PluginError::Panicked("boom 7".into())));
    }
}
