//! `zu`: the Zu plugin host on the command line. Parses arguments, installs
//! the log subscriber, and dispatches to one module per subcommand; each
//! returns an exit code or a [`Failure`], printed here once.

#![forbid(unsafe_code)]

mod check;
mod config;
mod cost;
mod events;
mod exit;
mod ids;
mod interrupt;
mod load;
mod log;
#[macro_use]
mod output;
mod pipeline;
mod plugins;
mod run;
mod sandbox;
mod serve;
mod settings;

/// The allocator `zu` runs with (and that `zu-bench` measures): the loop
/// allocates and frees small objects across threads, where it is much faster
/// than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Why a command stopped: the message (printed once, as `zu: ...`) and the
/// exit code it means.
#[derive(Debug)]
pub struct Failure {
    /// One of [`exit`]'s codes.
    pub code: u8,
    /// What happened and what to do.
    pub message: String,
}

impl Failure {
    /// Bad usage or config: exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }
    /// The command's work failed: exit 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: exit::FAILED,
            message: message.into(),
        }
    }
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure::usage(e.to_string())
    }
}

#[derive(Parser)]
#[command(
    name = "zu",
    version,
    about = "The Zu plugin host: load agent-runtime plugins from shared libraries and run them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the plugins found in the plugin directories, and every one refused with its reason.
    Plugins(plugins::PluginsArgs),
    /// Check one plugin library the way the host loads it: what a plugin author runs after each build.
    Check(check::CheckArgs),
    /// Show what this kernel enforces (Landlock, seccomp, namespaces) and the sandbox each plugin and
    /// MCP server would get; exit 1 where `containment = "required"` could not be met.
    Sandbox(sandbox::SandboxArgs),
    /// Run one task through the loop with a provider, tools, checks and a sink; print the Result as JSON.
    ///
    /// Settings come from flags, else from ./zu.toml (docs/config.md).
    Run(Box<run::RunArgs>),
    /// Read the event log of a durable sink (read-only): filtered, scoped by default, as a table or JSON lines.
    Events(events::EventsArgs),
    /// Serve the log of a durable sink as a live trace view in the browser and a JSON API.
    Serve(Box<serve::ServeArgs>),
    /// What runs on a durable log spent: model calls, tokens and dollars per model, and what replay saved.
    Cost(cost::CostArgs),
    /// Run the phases of a TOML pipeline file in order under one trace; running it again on a durable
    /// sink skips the phases that completed.
    Pipeline(Box<pipeline::PipelineArgs>),
    /// (internal) The probe child: opens libraries and reports their verdicts.
    #[command(name = "__probe", hide = true)]
    Probe,
    /// (internal) Runs a command (a stdio MCP server) inside the sandbox its parent set.
    #[command(name = "__jail", hide = true)]
    Jail {
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// (internal) A plugin process: serves the plugins of one library.
    #[command(name = "__serve", hide = true)]
    PluginProcess {
        /// The library file to open.
        file: std::path::PathBuf,
        /// Its path as the user knows it.
        display: std::path::PathBuf,
    },
}

/// `zu --help`'s description, the refusal codes listed from the code.
fn long_about() -> String {
    format!(
        "The Zu plugin host.\n\n\
         Plugins are shared libraries (.so, .dylib, .dll) built against zu-plugin-api. \
         Drop them into a directory and point zu at it with --plugins DIR, or list \
         directories in ZU_PLUGIN_PATH (colon-separated). Without either, zu reads \
         $HOME/.local/share/zu/plugins if it exists.\n\n\
         Every plugin that cannot be trusted is refused with a stable code (docs/plugins.md \
         says what each means): {}.\n\n\
         Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=zu=debug) for more; colour only on a \
         terminal, never with NO_COLOR set.",
        zu_runtime::LoadError::CODES.join(", ")
    )
}

/// Logs to stderr, coloured only on a terminal and never with `NO_COLOR`.
fn install_logging() {
    let stderr = std::io::stderr();
    let colour = stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
}

fn main() -> ExitCode {
    install_logging();
    let command = Cli::command()
        .long_about(long_about())
        .after_help(exit::help())
        .mut_subcommand("run", |run| run.after_help(exit::help()));
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The helper children speak frames on their own descriptors.
    match &cli.command {
        Command::Probe => return ExitCode::from(zu_loader::probe::child_main() as u8),
        Command::PluginProcess { file, display } => {
            return ExitCode::from(zu_loader::isolate::child::child_main(file, display) as u8)
        }
        Command::Jail { command } => {
            let command: Vec<_> = command.iter().map(Into::into).collect();
            return ExitCode::from(zu_loader::sandbox::jail(&command) as u8);
        }
        _ => {}
    }
    output::claim();
    let outcome = match cli.command {
        Command::Plugins(args) => plugins::run_plugins(args),
        Command::Check(args) => check::run(args),
        Command::Sandbox(args) => sandbox::run(args),
        Command::Events(args) => events::run(args),
        Command::Run(args) => run::run(*args),
        Command::Cost(args) => cost::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Pipeline(args) => pipeline::run(*args),
        Command::Probe | Command::PluginProcess { .. } | Command::Jail { .. } => unreachable!("handled above"),
    };
    let code = match outcome {
        Ok(code) => code,
        Err(Failure { code, message }) => {
            eprintln!("zu: {}", zu_runtime::display::escape_lines(&message));
            code
        }
    };
    output::leaving();
    ExitCode::from(code)
}
