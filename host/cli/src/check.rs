//! `zu check LIBRARY`: one plugin library loaded exactly as `zu run` will
//! load it, what it holds or why it is refused, and what a model will see of
//! each tool it offers (its description and parameters). A Rust library
//! archive (`.rlib`) is named for what it is: build the crate as a cdylib.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;
use zu_plugin_api::version::Kind;
use zu_runtime::display::escape;

use crate::config::parse_config_args;
use crate::load::{self, config_flag, Loaded};
use crate::plugins::{finish, settings};
use crate::Failure;

#[derive(Args)]
pub struct CheckArgs {
    /// The plugin library to check.
    #[arg(value_name = "LIB")]
    library: PathBuf,
    /// Config for one plugin's constructor, as KIND.NAME=JSON or KIND.NAME=@FILE (repeatable).
    #[arg(long = "config", value_name = "KIND.NAME=JSON")]
    configs: Vec<String>,
    /// Print one JSON object: {"plugins": [...], "failures": [...]}.
    #[arg(long)]
    json: bool,
    /// Read plugin configs from this file instead of ./zu.toml.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    isolation_flags: load::IsolationFlags,
}

pub fn run(args: CheckArgs) -> Result<u8, Failure> {
    let mut settings = settings(&args.config_file)?;
    let mut configs = settings.plugin_configs()?;
    configs.extend(parse_config_args(&args.configs)?);
    if let Some(why) = rust_archive(&args.library) {
        return Err(Failure::failed(why));
    }
    if !args.library.exists() {
        return Err(Failure::usage(
            zu_loader::LoaderError::MissingLibrary { path: args.library }.to_string(),
        ));
    }
    let protection = args
        .isolation_flags
        .protection(&load::FileContainment::take_from(&mut settings))?;
    let loaded = load::load(load::Source::File(&args.library), configs, config_flag, protection)?;
    let code = finish(&loaded, args.json, true);
    if !args.json {
        crate::output::write(&tools_seen(&loaded));
    }
    Ok(code)
}

/// Why `path` (or, when it is missing, the `.rlib` beside it) is a Rust
/// library archive and not a shared library, with what to do.
fn rust_archive(path: &Path) -> Option<String> {
    let archive = |p: &Path| {
        let mut head = [0u8; 8];
        let read = std::fs::File::open(p).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
        p.extension().is_some_and(|e| e == "rlib") || (read.is_ok() && &head == b"!<arch>\n")
    };
    let found = if path.exists() {
        archive(path).then(|| path.to_owned())
    } else {
        let stem = path.file_stem()?.to_str()?;
        let beside = path.with_file_name(format!("{stem}.rlib"));
        beside.is_file().then_some(beside)
    }?;
    Some(format!(
        "{} is a Rust library archive (.rlib), not a shared library zu can load: build the crate as a cdylib \
         (crate-type = [\"cdylib\"] under [lib] in its Cargo.toml), then check the .{} cargo puts beside it",
        found.display(),
        zu_loader::discovery::LIBRARY_EXTENSION
    ))
}

/// What the model sees of each tool (from its schema): description and
/// parameters; a tool without a description is flagged, on stderr too.
fn tools_seen(loaded: &Loaded) -> String {
    let mut out = String::new();
    for name in loaded.registry.names(Kind::Tools) {
        let Some(tool) = loaded.registry.tool(&name) else {
            continue;
        };
        let schema = tool.schema();
        let spec = schema.get("function").unwrap_or(&schema);
        let description = spec.get("description").and_then(Value::as_str).unwrap_or("").trim();
        let parameters = spec.get("parameters").cloned().unwrap_or(Value::Null);
        if out.is_empty() {
            out.push_str("what the model sees of each tool\n");
        }
        let name = escape(&name).into_owned();
        if description.is_empty() {
            eprintln!("zu: warning: tool {name} has no description: the model sees only its name (give it a doc comment, or a \"description\" in its schema)");
            out.push_str(&format!("  {name}: (no description)\n"));
        } else {
            out.push_str(&format!("  {name}: {}\n", escape(description)));
        }
        out.push_str(&format!("    parameters: {}\n", escape(&parameters.to_string())));
    }
    out
}
