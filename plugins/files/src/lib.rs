//! The `file_read` tool (tier 1, `fs:read`): reads a UTF-8 text file under a
//! configured root directory. A path that escapes the root (`..`, an absolute
//! path, a symlink pointing outside) is a security block; a binary or oversized
//! file is a plain error the model sees.
//!
//! Config: `{"root": "docs", "max_bytes": 1000000}`; without config the root is
//! the working directory the host started in.

#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use zu_plugin_api::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    root: Option<PathBuf>,
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
}

fn default_max_bytes() -> u64 {
    1_000_000
}

/// The file_read tool.
pub struct FileRead {
    root: PathBuf,
    max_bytes: u64,
}

impl Plugin for FileRead {
    const NAME: &'static str = "file_read";
    const ENVELOPE: Envelope = Envelope {
        tier: 1,
        capabilities: &[CAP_FS_READ],
        egress: &[],
    };

    fn new(config: Value) -> Result<Self, PluginError> {
        let config: Config = if config.is_null() {
            Config {
                root: None,
                max_bytes: default_max_bytes(),
            }
        } else {
            serde_json::from_value(config).map_err(|e| PluginError::invalid(format!("file_read config: {e}")))?
        };
        let root = match config.root {
            Some(r) => r,
            None => std::env::current_dir()
                .map_err(|e| PluginError::failed(format!("file_read: no working directory: {e}")))?,
        };
        let root = root
            .canonicalize()
            .map_err(|e| PluginError::invalid(format!("file_read root {}: {e}", root.display())))?;
        if !root.is_dir() {
            return Err(PluginError::invalid(format!(
                "file_read root {} is not a directory",
                root.display()
            )));
        }
        Ok(FileRead {
            root,
            max_bytes: config.max_bytes,
        })
    }
}

impl FileRead {
    /// The real path of `requested` if it stays under the root.
    fn resolve(&self, requested: &str) -> Result<PathBuf, PluginError> {
        let escape = |why: &str| {
            PluginError::security_block(
                "path_escape",
                Some(requested.to_owned()),
                format!("refusing to read {requested:?}: {why}"),
            )
        };
        let rel = Path::new(requested);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, Component::Prefix(_) | Component::RootDir))
        {
            return Err(escape(
                "absolute paths are not allowed; give a path relative to the root",
            ));
        }
        if rel.components().any(|c| c == Component::ParentDir) {
            return Err(escape("'..' is not allowed"));
        }
        let joined = self.root.join(rel);
        let real = joined.canonicalize().map_err(|e| read_error(requested, &e))?;
        if !real.starts_with(&self.root) {
            return Err(escape("it resolves (through a symlink) outside the root"));
        }
        Ok(real)
    }
}

/// A read that failed: the sandbox's denial named as such, else the OS error.
fn read_error(requested: &str, e: &std::io::Error) -> PluginError {
    PluginError::denied(e, CAP_FS_READ, requested)
        .unwrap_or_else(|| PluginError::failed(format!("cannot read {requested:?}: {e}")))
}

impl Tool for FileRead {
    fn schema(&self) -> Value {
        json!({
            "name": "file_read",
            "description": "Read a UTF-8 text file under the configured root directory.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "a path relative to the root"}},
                "required": ["path"],
            },
        })
    }

    fn prompt_fragment(&self) -> String {
        "file_read(path): read a text file under the document root.".into()
    }

    fn call(&self, _ctx: &dyn RunContext, args: JsonObject) -> Result<JsonObject, PluginError> {
        let requested = args
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| PluginError::invalid("file_read needs a string argument \"path\""))?;
        let real = self.resolve(requested)?;
        let meta = std::fs::metadata(&real).map_err(|e| read_error(requested, &e))?;
        if !meta.is_file() {
            return Err(PluginError::failed(format!("{requested:?} is not a regular file")));
        }
        if meta.len() > self.max_bytes {
            return Err(PluginError::failed(format!(
                "{requested:?} is {} bytes, over the {}-byte limit of file_read",
                meta.len(),
                self.max_bytes
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        std::fs::File::open(&real)
            .and_then(|f| f.take(self.max_bytes + 1).read_to_end(&mut bytes))
            .map_err(|e| read_error(requested, &e))?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(PluginError::failed(format!(
                "{requested:?} grew over the {}-byte limit",
                self.max_bytes
            )));
        }
        if bytes.contains(&0) {
            return Err(PluginError::failed(format!(
                "{requested:?} is a binary file; file_read reads text only"
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| PluginError::failed(format!("{requested:?} is not UTF-8 text; file_read reads text only")))?;
        let out = json!({"path": requested, "bytes": text.len(), "text": text});
        Ok(out.as_object().cloned().unwrap_or_default())
    }
}

#[cfg(feature = "export")]
zu_plugin_api::export_plugins! { tools: [FileRead] }

#[cfg(test)]
mod tests {
    use super::*;
    use zu_plugin_api::filter::StoredEvent;

    struct NoCtx(TaskSpec);
    impl RunContext for NoCtx {
        fn spec(&self) -> &TaskSpec {
            &self.0
        }
        fn observation(&self) -> Option<&Value> {
            None
        }
        fn event_count(&self) -> u64 {
            0
        }
        fn query(&self, _: &EventFilter, _: Option<u64>, _: u64) -> Result<Vec<StoredEvent>, PluginError> {
            Ok(vec![])
        }
    }

    fn read(tool: &FileRead, path: &str) -> Result<JsonObject, PluginError> {
        tool.call(
            &NoCtx(TaskSpec::new("q")),
            json!({"path": path}).as_object().cloned().unwrap(),
        )
    }

    fn setup() -> (tempfile::TempDir, FileRead) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("docs");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/page.md"), "hello, page").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "top secret").unwrap();
        std::fs::write(root.join("blob.bin"), [0u8, 1, 2]).unwrap();
        std::fs::write(root.join("big.txt"), "x".repeat(2000)).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt")).unwrap();
        let tool = FileRead::new(json!({"root": root, "max_bytes": 1000})).unwrap();
        (dir, tool)
    }

    #[test]
    fn reads_text_under_the_root() {
        let (_d, tool) = setup();
        let out = read(&tool, "sub/page.md").unwrap();
        assert_eq!(out["text"], "hello, page");
        assert_eq!(out["bytes"], 11);
        assert_eq!(out["path"], "sub/page.md");
    }

    #[test]
    fn escapes_are_security_blocks() {
        let (dir, tool) = setup();
        let abs = dir.path().join("secret.txt");
        for path in [
            "../secret.txt",
            "sub/../../secret.txt",
            abs.to_str().unwrap(),
            "link.txt",
        ] {
            match read(&tool, path) {
                Err(PluginError::SecurityBlock(b)) => {
                    assert_eq!(b.kind, "path_escape", "{path}");
                    assert_eq!(b.target.as_deref(), Some(path));
                }
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn binary_oversized_and_missing_files_are_plain_errors() {
        let (_d, tool) = setup();
        for (path, needle) in [
            ("blob.bin", "binary"),
            ("big.txt", "over the 1000-byte limit"),
            ("nope.txt", "cannot read"),
        ] {
            match read(&tool, path) {
                Err(PluginError::Failed(m)) => assert!(m.contains(needle), "{path}: {m}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        assert!(matches!(
            tool.call(&NoCtx(TaskSpec::new("q")), JsonObject::new()),
            Err(PluginError::InvalidInput(_))
        ));
    }

    #[test]
    fn a_missing_root_is_a_config_error() {
        let err = FileRead::new(json!({"root": "/nonexistent/zu-root"})).err().unwrap();
        assert!(
            matches!(err, PluginError::InvalidInput(ref m) if m.contains("/nonexistent/zu-root")),
            "{err}"
        );
    }
}
