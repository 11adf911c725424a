//! `zu serve`: the log of a durable sink as a live trace view in the
//! browser and a JSON API — the runs, one run as a timeline, two runs side
//! by side, new events as server-sent events. Loopback by default; any
//! other address needs a bearer token. The pages are part of the binary.

mod api;
mod index;
mod pages;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;

use crate::{exit, load, Failure};

#[derive(Args)]
pub struct ServeArgs {
    /// The sink plugin holding the log (e.g. sqlite, jsonl, postgres). Default: zu.toml's [sink].
    #[arg(long, value_name = "NAME")]
    sink: Option<String>,
    /// The sink's config, as JSON or @FILE (e.g. '{"path": "zu.db"}').
    #[arg(long, value_name = "JSON")]
    sink_config: Option<String>,
    /// A plugin directory to scan (repeatable). Default: zu.toml's, $ZU_PLUGIN_PATH, else
    /// $HOME/.local/share/zu/plugins.
    #[arg(long = "plugins", value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Where to listen. Loopback unless a token is configured (--token-env).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7788")]
    addr: SocketAddr,
    /// The environment variable holding a bearer token: every request must carry it
    /// (`Authorization: Bearer TOKEN`, or `?token=TOKEN` from a browser). Required for a
    /// non-loopback --addr.
    #[arg(long, value_name = "VAR")]
    token_env: Option<String>,
    /// Show payloads in full instead of scoped (the allowlist of `zu events`).
    #[arg(long)]
    full: bool,
    /// How often to look for new events, in milliseconds (postgres wakes on NOTIFY).
    #[arg(long, value_name = "MS", default_value_t = 25)]
    poll_ms: u64,
    /// A TOML price file for the dollars column (see `zu cost`).
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// Read settings from this file instead of ./zu.toml.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    isolation_flags: load::IsolationFlags,
}

/// What every request handler shares.
pub struct App {
    pub(crate) bus: Arc<zu_runtime::EventBus>,
    pub(crate) shared: Arc<index::Shared>,
    pub(crate) full: bool,
    pub(crate) token: Option<String>,
}

pub fn run(args: ServeArgs) -> Result<u8, Failure> {
    let token = match &args.token_env {
        Some(var) => Some(std::env::var(var).ok().filter(|t| !t.is_empty()).ok_or_else(|| {
            Failure::usage(format!(
                "--token-env {var}: ${var} is not set (or empty); export the token first"
            ))
        })?),
        None => None,
    };
    if !args.addr.ip().is_loopback() && token.is_none() {
        return Err(Failure::usage(format!(
            "--addr {} is not loopback: anyone who reaches it could read the log; give --token-env VAR (a bearer token every request must carry) or listen on 127.0.0.1",
            args.addr
        )));
    }
    let file = args.config_file.clone().unwrap_or_else(|| PathBuf::from("zu.toml"));
    let mut settings = crate::settings::Settings::read(&file, args.config_file.is_some())?;
    let file_sink = settings.file.sink.take();
    let (sink, sink_config) = settings
        .choose(
            &args.sink,
            &args.sink_config,
            "--sink-config",
            file_sink.as_ref(),
            "sink",
        )?
        .ok_or_else(|| Failure::usage("no log to serve: give --sink NAME --sink-config JSON (or [sink] in zu.toml)"))?;
    let sink_config = sink_config.map(|(value, _)| value.to_string());
    if sink == "memory" {
        return Err(Failure::usage(
            "a memory log lives only inside the process that writes it; serve a durable sink (sqlite, jsonl, postgres)",
        ));
    }
    let dirs = if args.dirs.is_empty() {
        let table = settings.file.plugins.take().map(|p| p.into_table()).unwrap_or_default();
        table.dirs.iter().map(|p| settings.base.join(p)).collect()
    } else {
        args.dirs.clone()
    };
    let prices = match &args.prices {
        Some(p) => zu_runtime::Prices::with_file(p).map_err(|e| Failure::usage(e.to_string()))?,
        None => zu_runtime::Prices::default(),
    };
    let bus = Arc::new(crate::log::open(
        &sink,
        sink_config.as_deref(),
        &dirs,
        &args.isolation_flags,
        Some(args.poll_ms.max(10)),
    )?);
    let (live, _) = tokio::sync::broadcast::channel(4096);
    let shared = Arc::new(index::Shared {
        index: Mutex::new(index::Index::default()),
        live,
    });
    {
        let (bus, shared) = (bus.clone(), shared.clone());
        let poll = Duration::from_millis(args.poll_ms.max(1));
        std::thread::Builder::new()
            .name("zu-serve-follow".into())
            .spawn(move || index::follow(bus, shared, prices, poll))
            .map_err(|e| Failure::failed(format!("cannot start the log follower: {e}")))?;
    }
    let app = Arc::new(App {
        bus,
        shared,
        full: args.full,
        token,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the server's runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| Failure::failed(format!("cannot listen on {}: {e}", args.addr)))?;
        let local = listener.local_addr().map_err(|e| Failure::failed(e.to_string()))?;
        eprintln!("zu: serving the {sink} log on http://{local}/ (Ctrl-C to stop)");
        axum::serve(listener, api::router(app))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| Failure::failed(format!("the server stopped: {e}")))
    })?;
    Ok(exit::OK)
}
