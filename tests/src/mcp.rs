//! The MCP servers the tests call: the reference servers published on the
//! npm registry (`@modelcontextprotocol/server-everything`,
//! `@modelcontextprotocol/server-filesystem`), pinned, installed with npm
//! under `target/mcp-servers` once (scripts/test.sh installs Node and npm
//! when they are missing).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The pinned packages.
pub const PACKAGES: [&str; 2] = [
    "@modelcontextprotocol/server-everything@2026.8.31",
    "@modelcontextprotocol/server-filesystem@2026.8.31",
];

/// The directory of the servers' executables (`mcp-server-everything`,
/// `mcp-server-filesystem`), installing them first if needed.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let prefix = crate::workspace_root().join("target/mcp-servers");
        let bin = prefix.join("node_modules/.bin");
        if !(bin.join("mcp-server-everything").exists() && bin.join("mcp-server-filesystem").exists()) {
            std::fs::create_dir_all(&prefix).unwrap();
            // One installer at a time across test processes.
            let lock = std::fs::File::create(prefix.join(".install-lock")).unwrap();
            lock.lock().unwrap();
            if !bin.join("mcp-server-filesystem").exists() {
                eprintln!("zu-tests: installing {} with npm", PACKAGES.join(", "));
                let status = Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--prefix"])
                    .arg(&prefix)
                    .args(PACKAGES)
                    .status()
                    .expect("npm is installed (scripts/test.sh installs Node and npm when missing)");
                assert!(status.success(), "npm install {PACKAGES:?} failed");
            }
        }
        bin
    })
    .clone()
}
