//! The subcommands of `zu`, one module each.

pub mod plugins;
