//! `zu`: the Zu plugin host on the command line. Parses arguments, installs
//! the log subscriber, and dispatches to one module per subcommand.

mod cli;

/// The allocator `zu` runs with (and that `zu-bench` measures): the loop
/// allocates and frees small objects across threads, where it is much faster
/// than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a plugin or task failed (see each command).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage, bad config, or an unreadable plugin directory.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "zu",
    version,
    about = "The Zu plugin host: load agent-runtime plugins from shared libraries and run them",
    long_about = "The Zu plugin host.\n\n\
        Plugins are shared libraries (.so, .dylib, .dll) built against zu-plugin-api. \
        Drop them into a directory and point zu at it with --plugins DIR, or list \
        directories in ZU_PLUGIN_PATH (colon-separated). Without either, zu reads \
        $HOME/.local/share/zu/plugins if it exists.\n\n\
        Every plugin that cannot be trusted is refused with a stable error code \
        (not_a_library, not_a_plugin, abi_mismatch, unknown_kind, invalid_version, \
        incompatible_interface, layout_mismatch, constructor_failed, \
        constructor_panicked, name_taken, insecure_permissions, aborts_on_panic).\n\n\
        Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=zu_host=debug) for more.",
    after_help = "Exit codes: 0 success; 1 a plugin was refused (zu check, or zu plugins --strict), \
        or zu run could not start (bad config, no such plugin); 2 bad usage, a bad --config, or an \
        unreadable plugin directory (zu plugins, check, events); 3 zu run ended ESCALATE; 4 zu run ended TERMINAL."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the plugins found in the plugin directories, and every one refused with its reason.
    Plugins(cli::plugins::PluginsArgs),
    /// Check one plugin library the way the host loads it: what a plugin author runs after each build.
    Check(cli::plugins::CheckArgs),
    /// Run one task through the loop with a provider, tools, checks and a sink; print the Result as JSON.
    ///
    /// Settings come from flags, else from ./zu.toml (see README). Exit codes: 0 success,
    /// 1 error (bad config, no such plugin), 3 escalate, 4 terminal.
    Run(Box<cli::run::RunArgs>),
    /// Read the event log of a durable sink: filtered, scoped by default, as a table or JSON lines.
    Events(cli::events::EventsArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Plugins(args) => cli::plugins::run_plugins(args),
        Command::Check(args) => cli::plugins::run_check(args),
        Command::Events(args) => cli::events::run(args),
        Command::Run(args) => cli::run::run(*args),
    };
    ExitCode::from(code)
}
