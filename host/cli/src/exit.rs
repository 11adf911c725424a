//! The exit codes of `zu`, defined once: every subcommand means the same by
//! each, and `zu --help` prints this table.

/// The command did its job.
pub const OK: u8 = 0;
/// What the command was asked to check or run failed: a plugin was refused
/// (`zu check`, `zu plugins --strict`), a plugin the command names is not
/// loaded, a log could not be read, or `zu run` could not start its run.
pub const FAILED: u8 = 1;
/// The invocation is wrong: a bad flag value or config (JSON, zu.toml, a
/// config for a plugin that does not exist), or an unreadable plugin directory.
pub const USAGE: u8 = 2;
/// `zu run`: the run ended ESCALATE (the ladder was exhausted).
pub const ESCALATE: u8 = 3;
/// `zu run`: the run ended TERMINAL (a budget, a detector, a provider error).
pub const TERMINAL: u8 = 4;

/// A plugin running inside zu called `exit()` (in-process isolation).
pub const PLUGIN_ENDED: u8 = 5;
/// `zu events` read the log but skipped rows it could not read (each named
/// on stderr): the output is complete except for those.
pub const DAMAGED: u8 = 6;
/// `zu run` was interrupted by SIGHUP (128 + 1); the log ends `task.terminal`.
pub const SIGHUP: u8 = 129;
/// `zu run` was interrupted by SIGINT, Ctrl-C (128 + 2).
pub const SIGINT: u8 = 130;
/// `zu run` was interrupted by SIGTERM (128 + 15).
pub const SIGTERM: u8 = 143;

/// Every code and what it means, for `--help`.
pub const TABLE: [(u8, &str); 10] = [
    (OK, "success"),
    (FAILED, "a plugin was refused (zu check, zu plugins --strict), a named plugin is not loaded, the log could not be read, or zu run could not start"),
    (USAGE, "bad usage: a bad flag, config or zu.toml, a config for a plugin that does not exist, or an unreadable plugin directory"),
    (ESCALATE, "zu run ended ESCALATE"),
    (TERMINAL, "zu run ended TERMINAL"),
    (PLUGIN_ENDED, "a plugin running inside zu (--isolation in-process) called exit(); zu says which"),
    (DAMAGED, "zu events skipped rows of a damaged log that it could not read (each named on stderr)"),
    (SIGHUP, "zu run was interrupted by SIGHUP; the log ends with task.terminal interrupted:SIGHUP"),
    (SIGINT, "zu run was interrupted by SIGINT (Ctrl-C; a second one exits at once)"),
    (SIGTERM, "zu run was interrupted by SIGTERM"),
];

/// The `Exit codes:` paragraph of `--help`.
pub fn help() -> String {
    let lines: Vec<String> = TABLE.iter().map(|(c, m)| format!("  {c}  {m}")).collect();
    format!("Exit codes:\n{}", lines.join("\n"))
}
