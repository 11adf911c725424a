//! `zu serve`: the log of a durable sink as a live trace view in the
//! browser and a JSON API — the runs, one run as a timeline, two runs side
//! by side, new events as server-sent events. It answers only its own host
//! names and only with its token (made at start unless configured), which a
//! browser trades once for a session cookie. The pages are part of the binary.

mod access;
mod api;
mod index;
mod login;
mod pages;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;

use crate::{exit, Failure};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    log: crate::log::LogArgs,
    /// Where to listen.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7788")]
    addr: SocketAddr,
    /// Another host name this server answers to (repeatable; also zu.toml [serve]
    /// allow_hosts). Requests naming any other host are refused (DNS rebinding);
    /// localhost, the loopback addresses and --addr's are always served.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// The environment variable holding the token (also zu.toml [serve] token_env).
    /// Without it, a new token is made at every start. API clients send
    /// `Authorization: Bearer TOKEN`; a browser opens the one-time login link printed
    /// at start (or pastes the token at /login) and gets a session cookie.
    #[arg(long, value_name = "VAR")]
    token_env: Option<String>,
    /// Show payloads scoped (the allowlist of `zu events`). By default whoever holds the
    /// token sees them in full.
    #[arg(long)]
    scoped: bool,
    /// Payloads in full (the default; kept for scripts written for older versions).
    #[arg(long, hide = true, conflicts_with = "scoped")]
    full: bool,
    /// How often to look for new events, in milliseconds (postgres wakes on NOTIFY).
    #[arg(long, value_name = "MS", default_value_t = 25)]
    poll_ms: u64,
    /// A TOML price file for the dollars column (see `zu cost`).
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
}

/// What every request handler shares.
pub struct App {
    pub(crate) bus: Arc<zu_runtime::EventBus>,
    pub(crate) shared: Arc<index::Shared>,
    pub(crate) full: bool,
    pub(crate) access: access::Access,
}

type AppState = axum::extract::State<Arc<App>>;

/// The shortest token zu serve accepts from --token-env.
const MIN_TOKEN_LEN: usize = 16;

pub fn run(args: ServeArgs) -> Result<u8, Failure> {
    let mut settings = args.log.settings()?;
    let table = settings.file.serve.take().unwrap_or_default();
    let token_env = args.token_env.clone().or(table.token_env);
    let token = match &token_env {
        Some(var) => {
            let t = std::env::var(var).ok().filter(|t| !t.is_empty()).ok_or_else(|| {
                Failure::usage(format!(
                    "token_env {var}: ${var} is not set (or empty); export the token first"
                ))
            })?;
            if t.len() < MIN_TOKEN_LEN {
                return Err(Failure::usage(format!(
                    "token_env {var}: the token is {} characters; use at least {MIN_TOKEN_LEN} (or leave token_env out and zu serve makes one)",
                    t.len()
                )));
            }
            t
        }
        None => access::secret(),
    };
    let mut names = args.allow_hosts.clone();
    names.extend(table.allow_hosts);
    let prices = match &args.prices {
        Some(p) => zu_runtime::Prices::with_file(p).map_err(|e| Failure::usage(e.to_string()))?,
        None => zu_runtime::Prices::default(),
    };
    let crate::log::Log { bus, sink } = args.log.open_with(&mut settings, Some(args.poll_ms.max(10)))?;
    let bus = Arc::new(bus);
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the server's runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| Failure::failed(format!("cannot listen on {}: {e}", args.addr)))?;
        let local = listener.local_addr().map_err(|e| Failure::failed(e.to_string()))?;
        let access = access::Access::new(token, local, &names);
        eprintln!("zu: serving the {sink} log on http://{local}/ (Ctrl-C to stop)");
        eprintln!("zu: log in once at http://{local}/login?code={}", access.login_code());
        match &token_env {
            Some(var) => eprintln!("zu: API clients send \"Authorization: Bearer ${var}\""),
            None => eprintln!("zu: API clients send \"Authorization: Bearer {}\"", access.token()),
        }
        if !local.ip().is_loopback() {
            eprintln!("zu: {local} is not loopback and this is plain HTTP: put TLS in front of it for anything but a trusted network");
        }
        let app = Arc::new(App {
            bus,
            shared,
            full: !args.scoped,
            access,
        });
        let service = api::router(app).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| Failure::failed(format!("the server stopped: {e}")))
    })?;
    Ok(exit::OK)
}
