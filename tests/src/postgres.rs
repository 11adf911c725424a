//! A real PostgreSQL server for the tests and benchmarks: `ZU_TEST_POSTGRES_URL`
//! when set, else a throwaway server this process starts once (initdb and
//! postgres on a temporary directory and a free port, as an unprivileged user
//! when run as root) and that stops when this process ends. Each test gets a
//! database of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable naming a server to use instead of starting one.
pub const URL_ENV: &str = "ZU_TEST_POSTGRES_URL";

/// The directory holding `initdb` and `postgres`, if they are installed.
pub fn server_binaries() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("ZU_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let found = |d: &Path| d.join("initdb").exists() && d.join("postgres").exists();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| found(d));
    if from_pg_config.is_some() {
        return from_pg_config;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| r.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|d| found(d));
    versions.sort();
    versions.pop()
}

fn bin_dir() -> PathBuf {
    server_binaries().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries found (pg_config --bindir, /usr/lib/postgresql/*/bin): \
             install the distribution's postgresql package (the README's test command does), or set {URL_ENV}"
        )
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `(uid, gid)` of the user the server runs as when the tests run as root.
fn server_user() -> (String, String) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let find = |name: &str| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name) && f.len() > 3)
            .map(|f| (f[2].to_owned(), f[3].to_owned()))
    };
    find("postgres")
        .or_else(|| find("nobody"))
        .unwrap_or(("65534".into(), "65534".into()))
}

/// A command run as the server's user, ended with SIGINT (a fast shutdown)
/// when the thread that started it ends.
fn as_server(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    if running_as_root() {
        let (uid, gid) = server_user();
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups");
    }
    cmd.arg("--pdeathsig=SIGINT").arg(program);
    cmd
}

/// Removes the directories of earlier test servers whose process is gone.
fn remove_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("zu-test-pg-") else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("an address")
        .port()
}

fn start(fsync: bool) -> String {
    let bin = bin_dir();
    remove_stale(&std::env::temp_dir());
    let base = std::env::temp_dir().join(format!("zu-test-pg-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("a directory for the test server");
    let data = base.join("data");
    if running_as_root() {
        let (uid, gid) = server_user();
        let status = Command::new("chown")
            .arg(format!("{uid}:{gid}"))
            .arg(&base)
            .status()
            .expect("chown runs");
        assert!(status.success(), "cannot give {} to the server's user", base.display());
    }
    let out = as_server(&bin.join("initdb"))
        .args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let data_dir = data.clone();
    let socket_dir = base.clone();
    let postgres = bin.join("postgres");
    // A thread that lives as long as the process: the server's parent-death
    // signal follows the thread that started it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("zu-test-postgres".into())
        .spawn(move || {
            let child = as_server(&postgres)
                .args(["-D", data_dir.to_str().unwrap(), "-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"])
                .args(["-c", if fsync { "fsync=on" } else { "fsync=off" }])
                .args(["-k", socket_dir.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let _ = tx.send(child.map(|c| c.id()));
            loop {
                std::thread::park();
            }
        })
        .expect("a thread for the server");
    rx.recv().expect("the server thread answers").expect("postgres starts");
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match postgres::Client::connect(&url, postgres::NoTls) {
            Ok(_) => return url,
            Err(e) if Instant::now() > until => panic!("the test PostgreSQL server did not come up: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The URL of the test server's administrative database. The throwaway
/// server does not sync to disk (the tests need no power-cut safety).
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| std::env::var(URL_ENV).unwrap_or_else(|_| start(false)))
}

/// A throwaway server that syncs its log as in production, for benchmarks
/// (`ZU_BENCH_POSTGRES_URL` names one to use instead).
pub fn durable_server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| std::env::var("ZU_BENCH_POSTGRES_URL").unwrap_or_else(|_| start(true)))
}

/// A new, empty database on the test server, as a URL.
pub fn fresh_database() -> String {
    new_database(server_url())
}

/// A new, empty database on the server at `admin`, as a URL.
pub fn new_database(admin: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "zu_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut client = postgres::Client::connect(admin, postgres::NoTls).expect("the server accepts connections");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("a new database (the user needs CREATEDB)");
    match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("the server URL must end in /DATABASE"),
    }
}
