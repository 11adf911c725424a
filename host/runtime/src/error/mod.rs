//! Every reason a plugin does not enter the registry, as one typed error with a
//! stable snake_case code (`codes.rs`). Messages name the file, the plugin, both versions
//! where relevant, and what to do, in one or two lines.

use std::path::PathBuf;

use zu_plugin_api::version::Kind;

/// Why a library or one plugin in it was not loaded. Serializable, so a
/// probe child can report it and the verdict cache can keep it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be opened as a shared library.
    ///
    /// ## Resolution
    /// Remove the file from the plugin directory, or rebuild it as a
    /// `cdylib` for this platform.
    #[error("{}: not a loadable shared library ({reason}); remove it from the plugin directory or rebuild it as a cdylib", library.display())]
    NotALibrary {
        /// The file.
        library: PathBuf,
        /// What the dynamic loader said.
        reason: String,
    },

    /// A shared library that does not export a Zu root module.
    ///
    /// ## Resolution
    /// Build the library with `zu_plugin_api::export_plugins!`, or move it out
    /// of the plugin directory.
    #[error("{}: a shared library without a Zu root module; build it with zu_plugin_api::export_plugins! or move it out of the plugin directory", library.display())]
    NotAPlugin {
        /// The file.
        library: PathBuf,
    },

    /// The library's root module does not match this host's (another
    /// abi_stable version, another zu-plugin-api major, or not Zu's module).
    ///
    /// ## Resolution
    /// Rebuild the plugin against the zu-plugin-api this host was built with.
    #[error("{}: root module is incompatible with this host ({detail}); rebuild the plugin against zu-plugin-api {}", library.display(), zu_plugin_api::version::API_VERSION)]
    AbiMismatch {
        /// The file.
        library: PathBuf,
        /// The one fact that differs.
        detail: String,
    },

    /// A declaration names a kind that is not one of the eight.
    ///
    /// ## Resolution
    /// Declare the plugin as one of providers, tools, detectors, validators,
    /// backends, sinks, policies or triggers.
    #[error("{}: plugin {name:?} declares unknown kind {kind:?}; expected one of providers, tools, detectors, validators, backends, sinks, policies, triggers", library.display())]
    UnknownKind {
        /// The file.
        library: PathBuf,
        /// The kind as declared.
        kind: String,
        /// The plugin.
        name: String,
    },

    /// The declared interface version is not a semantic version.
    ///
    /// ## Resolution
    /// Rebuild the plugin with `export_plugins!`, which records a valid version.
    #[error("{}: {kind} plugin {name:?} declares interface version {version:?}, which is not a semantic version ({reason}); rebuild it with zu_plugin_api::export_plugins!", library.display())]
    InvalidVersion {
        /// The file.
        library: PathBuf,
        /// The plugin's kind.
        kind: Kind,
        /// The plugin.
        name: String,
        /// The version as declared.
        version: String,
        /// Why it does not parse.
        reason: String,
    },

    /// The plugin was built against an interface version of its kind that
    /// this host does not provide (caret rule).
    ///
    /// ## Resolution
    /// Rebuild the plugin against zu-plugin-api with the host's interface
    /// version, or run a host that provides the plugin's.
    #[error("{}: {kind} plugin {name:?} was built for {kind} interface {plugin_version}, but this host provides {host_version}; rebuild the plugin against a zu-plugin-api with {kind} interface {host_version}, or use a Zu host that provides {plugin_version}", library.display())]
    IncompatibleInterface {
        /// The file.
        library: PathBuf,
        /// The plugin's kind.
        kind: Kind,
        /// The plugin.
        name: String,
        /// What the plugin declares.
        plugin_version: String,
        /// What this host provides.
        host_version: String,
    },

    /// The plugin's FFI object has a different layout from the host's, even
    /// though its declared version is compatible. It is never called.
    ///
    /// ## Resolution
    /// Rebuild the plugin against an unmodified zu-plugin-api.
    #[error("{}: {kind} plugin {name:?} declares a compatible interface but its FFI layout differs ({detail}); rebuild it against an unmodified zu-plugin-api {}", library.display(), zu_plugin_api::version::API_VERSION)]
    LayoutMismatch {
        /// The file.
        library: PathBuf,
        /// The plugin's kind.
        kind: Kind,
        /// The plugin.
        name: String,
        /// The first difference, as "at PATH: WHAT: expected X, found Y".
        detail: String,
    },

    /// The plugin's constructor returned an error.
    ///
    /// ## Resolution
    /// Fix the plugin's config as the message says (`zu` adds which flag or
    /// file the config came from).
    #[error("{origin}: {kind} plugin {name:?} failed to start: {message}")]
    ConstructorFailed {
        /// The file, or `in-process`.
        origin: String,
        /// The plugin's kind.
        kind: Kind,
        /// The plugin.
        name: String,
        /// What the constructor said.
        message: String,
    },

    /// The plugin's constructor panicked (caught inside the plugin).
    ///
    /// ## Resolution
    /// Report it to the plugin's author; the message is the panic's.
    #[error("{origin}: {kind} plugin {name:?} panicked while starting: {message}; this is a bug in the plugin, report it to its author")]
    ConstructorPanicked {
        /// The file, or `in-process`.
        origin: String,
        /// The plugin's kind.
        kind: Kind,
        /// The plugin.
        name: String,
        /// The panic message.
        message: String,
    },

    /// Another plugin of the same kind already has this name.
    ///
    /// ## Resolution
    /// Remove one of the two libraries, or rename one plugin.
    #[error("{origin}: {kind} plugin {name:?} is already provided by {first}; remove one of the two or rename one (no plugin silently shadows another)")]
    NameTaken {
        /// The file (or `in-process`) of the refused plugin.
        origin: String,
        /// The plugin's kind.
        kind: Kind,
        /// The contested name.
        name: String,
        /// Where the plugin that keeps the name came from.
        first: String,
    },

    /// The plugin's name is one zu writes its own events under (an event's
    /// `source`), so readers could take the plugin's events for zu's.
    #[error("{origin}: {kind} plugin {name:?} has a name zu keeps for its own events ({reserved}); rename the plugin")]
    ReservedName {
        /// The file (or `in-process`) of the refused plugin.
        origin: String,
        /// The plugin's kind.
        kind: Kind,
        /// The name.
        name: String,
        /// The reserved names, listed.
        reserved: String,
    },

    /// zu.toml grants the plugin more than it declared.
    #[error("{origin}: {kind} plugin {name:?}: {message}")]
    GrantTooWide {
        /// The library.
        origin: String,
        /// The plugin's kind.
        kind: Kind,
        /// Its name.
        name: String,
        /// What the grant gives that the declaration does not cover.
        message: String,
    },

    /// The file or its directory may be written by someone other than its
    /// owner (group write is accepted only for the owner's private group).
    ///
    /// ## Resolution
    /// `chmod go-w` the file and its directory.
    #[error("{}: may be written by users other than its owner (mode {mode:o}: {rule}); run `chmod go-w {}` before loading it", path.display(), path.display())]
    InsecurePermissions {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The rule that refused it.
        rule: String,
    },

    /// The library was built with `panic = "abort"`: its first panic would end
    /// the host.
    ///
    /// ## Resolution
    /// Rebuild it without `panic = "abort"` in its Cargo profile.
    #[error("{}: built with panic = \"abort\", so any panic in it would end the host; rebuild it with the default panic = \"unwind\" (remove panic = \"abort\" from its Cargo profile)", library.display())]
    AbortsOnPanic {
        /// The file.
        library: PathBuf,
    },

    /// A FIFO, socket, device or other non-regular file with a library's
    /// name. It is never opened (opening a FIFO would block).
    ///
    /// ## Resolution
    /// Remove it from the plugin directory.
    #[error("{}: {what}, not a regular file; it was not opened (remove it from the plugin directory)", path.display())]
    NotARegularFile {
        /// The path.
        path: PathBuf,
        /// What it is (`a FIFO`, `a socket`, ...).
        what: String,
    },

    /// The probe child that opened the library died of a signal.
    ///
    /// ## Resolution
    /// The library crashes when it is loaded (its load-time code, or a
    /// truncated or corrupt file); rebuild or replace it.
    #[error("{}: opening it crashed the probe ({signal}){}{}; rebuild or replace the library", library.display(), detail_of(detail), quarantine_of(*quarantined))]
    ProbeCrashed {
        /// The file.
        library: PathBuf,
        /// The signal, e.g. `SIGSEGV`.
        signal: String,
        /// The probe's last words on stderr, if any.
        detail: String,
        /// The verdict came from the cache.
        quarantined: bool,
    },

    /// The probe child exited (its load-time code called `exit`, say)
    /// without giving a verdict.
    ///
    /// ## Resolution
    /// The library ends the process when it is loaded; fix its load-time code.
    #[error("{}: opening it ended the probe with exit status {status} before a verdict{}{}; the library's load-time code exits the process, fix it", library.display(), detail_of(detail), quarantine_of(*quarantined))]
    ProbeExited {
        /// The file.
        library: PathBuf,
        /// The exit status.
        status: i32,
        /// The probe's last words on stderr, if any.
        detail: String,
        /// The verdict came from the cache.
        quarantined: bool,
    },

    /// Opening the library did not finish within the probe's deadline.
    ///
    /// ## Resolution
    /// The library blocks when it is loaded; fix its load-time code, or
    /// raise `--probe-timeout` if it is only slow.
    #[error("{}: opening it took longer than the probe's deadline of {} (the probe was killed){}; fix the library's load-time code, or raise --probe-timeout if it is only slow", library.display(), secs_of(*millis), quarantine_of(*quarantined))]
    ProbeTimeout {
        /// The file.
        library: PathBuf,
        /// The deadline, in milliseconds.
        millis: u64,
        /// The verdict came from the cache.
        quarantined: bool,
    },

    /// The probe answered something that is not a verdict.
    ///
    /// ## Resolution
    /// The library writes into the probe's verdict channel; fix it.
    #[error("{}: the probe answered something that is not a verdict ({detail}){}; the library interferes with the probe, fix it", library.display(), quarantine_of(*quarantined))]
    ProbeGarbled {
        /// The file.
        library: PathBuf,
        /// What was wrong with the answer.
        detail: String,
        /// The verdict came from the cache.
        quarantined: bool,
    },

    /// The plugin's constructor did not return within its deadline.
    ///
    /// ## Resolution
    /// The constructor blocks (a network call, a lock); fix it, or raise
    /// `--probe-timeout` if it is only slow.
    #[error("{origin}: {kind} plugin {name:?} did not finish starting within {}; its constructor blocks, fix it or raise --probe-timeout", secs_of(*millis))]
    ConstructorTimeout {
        /// The file, or `in-process`.
        origin: String,
        /// The plugin's kind.
        kind: Kind,
        /// The plugin.
        name: String,
        /// The deadline, in milliseconds.
        millis: u64,
    },

    /// The plugin's process died while constructing it (process isolation).
    ///
    /// ## Resolution
    /// The constructor crashes or exits the process; fix it.
    #[error("{origin}: {kind} plugin {name:?} ended its process while starting ({what}); fix its constructor")]
    ConstructorCrashed {
        /// The file.
        origin: String,
        /// The plugin's kind.
        kind: Kind,
        /// The plugin.
        name: String,
        /// What happened (`died of SIGSEGV`, `exited with status 3`).
        what: String,
    },

    /// An MCP server named in zu.toml could not be started or reached, or
    /// did not complete the MCP handshake and list its tools in time.
    ///
    /// ## Resolution
    /// Run its command by hand (or open its url) to see why; check
    /// `command`, `args`, `env_vars` (the server gets no other variable of
    /// zu's environment) and `startup_timeout_s`.
    #[error("MCP server {server:?}: {message}")]
    McpServerFailed {
        /// The server's name in `[mcp.servers.NAME]`.
        server: String,
        /// What went wrong and what to do.
        message: String,
    },
}

fn detail_of(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn secs_of(millis: u64) -> String {
    format!("{} s", millis as f64 / 1000.0)
}

fn quarantine_of(quarantined: bool) -> &'static str {
    if quarantined {
        "; cached: quarantined until the file changes"
    } else {
        ""
    }
}

mod codes;
