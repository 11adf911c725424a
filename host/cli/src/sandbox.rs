//! `zu sandbox`: what this kernel enforces (Landlock and its ABI, seccomp,
//! user namespaces) and the sandbox each plugin and MCP server would run in;
//! exits 1 where `containment = "required"` could not be met.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use zu_runtime::display::escape;

use crate::load;
use crate::{exit, Failure};

#[derive(Args)]
pub struct SandboxArgs {
    /// A plugin directory to scan (repeatable). Default: zu.toml's, $ZU_PLUGIN_PATH, else
    /// $HOME/.local/share/zu/plugins.
    #[arg(long = "plugins", value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Config for one plugin's constructor, as KIND.NAME=JSON or KIND.NAME=@FILE (repeatable).
    #[arg(long = "config", value_name = "KIND.NAME=JSON")]
    configs: Vec<String>,
    /// Print one JSON object: {"kernel": {...}, "plugins": [...]}.
    #[arg(long)]
    json: bool,
    /// Read settings from this file instead of ./zu.toml.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    isolation_flags: load::IsolationFlags,
}

#[derive(Serialize)]
struct Kernel {
    /// The Landlock ABI (0: none).
    landlock_abi: i32,
    /// Files (ABI 1), TCP ports (4), signal and abstract-socket scoping (6).
    files: bool,
    tcp_ports: bool,
    scoping: bool,
    seccomp: bool,
    user_namespaces: bool,
}

#[derive(Serialize)]
struct Row {
    kind: String,
    name: String,
    capabilities: Vec<String>,
    /// `enforced`, `partial` or `none`.
    sandbox: &'static str,
    missing: Vec<String>,
}

pub fn run(args: SandboxArgs) -> Result<u8, Failure> {
    let (abi, seccomp, namespaces) = zu_loader::sandbox::kernel();
    let kernel = Kernel {
        landlock_abi: abi,
        files: abi >= 1,
        tcp_ports: abi >= 4,
        scoping: abi >= 6,
        seccomp,
        user_namespaces: namespaces,
    };
    let (loaded, _mcp) = crate::plugins::load_listed(
        &args.dirs,
        &args.configs,
        &args.config_file,
        &args.isolation_flags,
        false,
    )?;
    let rows: Vec<Row> = loaded
        .registry
        .entries()
        .map(|e| {
            let info = &e.info;
            let (sandbox, missing) = match &info.sandbox {
                None => (
                    "none",
                    vec!["every layer: it runs in zu's process or over HTTP".to_owned()],
                ),
                Some(m) if m.is_empty() => ("enforced", Vec::new()),
                Some(m) => ("partial", m.clone()),
            };
            Row {
                kind: info.kind.to_string(),
                name: info.name.clone(),
                capabilities: info.capabilities.clone(),
                sandbox,
                missing,
            }
        })
        .collect();
    // Plugins whose sandbox could not be made (a grant wider than declared).
    let refused: Vec<serde_json::Value> = loaded
        .registry
        .failures()
        .iter()
        .map(|f| {
            serde_json::json!({"kind": f.kind, "name": f.name, "code": f.error.code(), "message": f.error.to_string()})
        })
        .collect();
    let short = !kernel.files || !kernel.seccomp || rows.iter().any(|r| r.sandbox != "enforced");
    if args.json {
        let text = serde_json::json!({"kernel": kernel, "plugins": rows, "failures": refused}).to_string();
        crate::outln!("{}", zu_runtime::display::json(&text));
    } else {
        let mut text = table(&kernel, &rows);
        for f in &refused {
            text.push_str(&format!(
                "refused: {}\n",
                escape(f["message"].as_str().unwrap_or_default())
            ));
        }
        crate::output::write(&text);
    }
    Ok(if short { exit::FAILED } else { exit::OK })
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn table(k: &Kernel, rows: &[Row]) -> String {
    let mut out = String::new();
    if k.files {
        out.push_str(&format!(
            "kernel: Landlock ABI {} (files yes, TCP ports {}, signal and socket scoping {}); seccomp {}; user namespaces {}\n",
            k.landlock_abi,
            yes(k.tcp_ports),
            yes(k.scoping),
            yes(k.seccomp),
            yes(k.user_namespaces)
        ));
    } else {
        out.push_str(&format!(
            "kernel: no Landlock (not built in or not enabled: common in containers and WSL), so files are not sandboxed and containment = \"required\" refuses every plugin; seccomp {}; user namespaces {}\n",
            yes(k.seccomp),
            yes(k.user_namespaces)
        ));
    }
    out.push_str("KIND        NAME                      SANDBOX   MISSING\n");
    for r in rows {
        out.push_str(&format!(
            "{:<11} {:<25} {:<9} {}\n",
            r.kind,
            escape(&r.name),
            r.sandbox,
            if r.missing.is_empty() {
                "-".to_owned()
            } else {
                r.missing.join("; ")
            }
        ));
    }
    out
}
