//! The sandbox of a stdio MCP server: it must exec itself, often through
//! an interpreter (`npx` → `node`, a `#!/usr/bin/env python3` script), so
//! it executes exactly its command, the interpreters its `#!` lines name,
//! the dynamic loader, its package and what its grant names.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use zu_plugin_api::ports::{CAP_FS_WRITE, CAP_NET};

use super::{hosts, namespace, GrantTooWide, Policy};

/// The dynamic loaders the kernel opens (for execute) to run a program.
const LOADERS: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    "/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
];

/// A program on zu's PATH, as `env` would find it.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// `program` and the interpreters its `#!` line names, following each
/// interpreter's own `#!` (`env NAME` resolved on PATH), each as named and
/// as its real path.
fn interpreters(program: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut next = Some(program.to_path_buf());
    for _ in 0..4 {
        let Some(p) = next.take() else { break };
        let real = p.canonicalize().unwrap_or_else(|_| p.clone());
        out.push(p);
        out.push(real.clone());
        let mut head = [0u8; 256];
        let n = std::fs::File::open(&real)
            .and_then(|mut f| f.read(&mut head))
            .unwrap_or(0);
        let Some(line) = head[..n].strip_prefix(b"#!") else {
            break;
        };
        let line = String::from_utf8_lossy(line);
        let line = line.lines().next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(interpreter) = words.next().map(PathBuf::from) else {
            break;
        };
        if interpreter.file_name().is_some_and(|n| n == "env") {
            out.push(interpreter.clone());
            out.extend(interpreter.canonicalize().ok());
            next = words
                .find(|w| !w.starts_with('-') && !w.contains('='))
                .and_then(on_path);
        } else {
            next = Some(interpreter);
        }
    }
    out
}

impl Policy {
    /// The policy of a stdio MCP server run as `command` in `cwd`: it may
    /// execute its command, the interpreters its `#!` line names (through
    /// `env` too), the dynamic loader, the package its command belongs to
    /// (the directory above an enclosing `node_modules`, else the command's
    /// grandparent, never the home directory or above) and `exec` — no other
    /// program of the system paths; it reads the working directory and the
    /// paths among its `args` (which name a filesystem server's roots);
    /// `fs:write` writes `write`, `net` reaches its hosts; everything else
    /// as for a plugin.
    #[allow(clippy::too_many_arguments)]
    pub fn for_server(
        command: &Path,
        args: &[String],
        cwd: &Path,
        capabilities: &[String],
        egress: &[String],
        hosts: &[String],
        read: &[PathBuf],
        write: &[PathBuf],
        exec: &[PathBuf],
    ) -> Result<Policy, GrantTooWide> {
        let has = |cap: &str| capabilities.iter().any(|c| c == cap);
        if let Some(p) = write.first().filter(|_| !has(CAP_FS_WRITE)) {
            return Err(GrantTooWide::undeclared(
                format!("write access to {}", p.display()),
                CAP_FS_WRITE,
            ));
        }
        let real = command.canonicalize().unwrap_or_else(|_| command.to_owned());
        // Never the home directory or above it (that would open `~/.ssh`):
        // then only the command's own directory.
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        let too_wide = |d: &Path| d.parent().is_none() || home.as_ref().is_some_and(|h| h.starts_with(d));
        let package = |p: &Path| {
            let wide = match p
                .ancestors()
                .find(|a| a.file_name().is_some_and(|n| n == "node_modules"))
            {
                Some(modules) => modules.parent(),
                None => p.parent().and_then(Path::parent),
            };
            match wide {
                Some(d) if !too_wide(d) => Some(d.to_path_buf()),
                _ => p.parent().filter(|d| !too_wide(d)).map(Path::to_path_buf),
            }
        };
        let mut p = Policy {
            subprocess: true,
            exec_only: true,
            net: has(CAP_NET),
            namespaces: namespace::available(),
            ..Policy::default()
        };
        if p.net {
            let granted = Some(hosts).filter(|h| !h.is_empty());
            p.hosts = hosts::reached(egress, granted, &Value::Null)?;
        } else if let Some(h) = hosts.first() {
            return Err(GrantTooWide::undeclared(format!("network access to {h}"), CAP_NET));
        }
        p.exec.extend([package(command), package(&real)].into_iter().flatten());
        p.exec.extend(interpreters(command));
        p.exec.extend(LOADERS.iter().map(PathBuf::from).filter(|l| l.exists()));
        p.exec.extend(exec.iter().map(|e| super::real(&cwd.join(e))));
        p.read.push(cwd.to_owned());
        p.read.extend(args.iter().map(|a| cwd.join(a)).filter(|a| a.exists()));
        p.read.extend(read.iter().map(|r| super::real(&cwd.join(r))));
        p.write.extend(write.iter().map(|w| super::real(&cwd.join(w))));
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scripts_interpreters_are_followed_through_env() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("server");
        std::fs::write(&script, "#!/usr/bin/env -S sh -e\necho\n").unwrap();
        let chain = interpreters(&script);
        assert!(chain.contains(&script), "{chain:?}");
        assert!(chain.contains(&PathBuf::from("/usr/bin/env")), "{chain:?}");
        let sh = on_path("sh").unwrap();
        assert!(chain.contains(&sh), "{chain:?}");
        let binary = interpreters(Path::new("/bin/sh"));
        assert!(binary.len() <= 2, "an ELF file names no interpreter: {binary:?}");
    }

    #[test]
    fn a_server_executes_its_chain_not_the_system_paths() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("bin/server");
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let p = Policy::for_server(&script, &[], dir.path(), &[], &[], &[], &[], &[], &[]).unwrap();
        assert!(p.exec_only && p.subprocess);
        assert!(p.exec.contains(&PathBuf::from("/bin/sh")), "{:?}", p.exec);
        assert!(
            !p.exec
                .iter()
                .any(|e| e == Path::new("/usr/bin") || e == Path::new("/bin")),
            "{:?}",
            p.exec
        );
    }
}
