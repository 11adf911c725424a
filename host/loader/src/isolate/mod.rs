//! Plugins in a process of their own: the frames ([`protocol`]), the plugin
//! process ([`child`]), its supervisor in the host ([`supervisor`]), and the
//! port-trait handles the registry holds ([`remote`]).

pub mod child;
pub mod protocol;
pub mod remote;
pub mod supervisor;

pub use supervisor::Supervisor;
