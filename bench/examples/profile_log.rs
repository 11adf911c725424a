//! A K=1000 run logging into one durable log, for profilers:
//! `LOG=sqlite/process strace -c -f target/release/examples/profile_log`.
//! `LOG` is one of the labels `zu-bench` prints (`sqlite/power`,
//! `jsonl/process`, `postgres/power`, ...); the postgres logs use the same
//! throwaway server as `zu-bench`. Prints the figure as JSON.

use zu_bench::{boundary, logs};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let want = std::env::var("LOG").unwrap_or_else(|_| "sqlite/process".into());
    let server = want
        .starts_with("postgres/")
        .then(zu_tests::postgres::durable_server_url);
    let log = logs::logs(server)
        .into_iter()
        .find(|l| l.label() == want)
        .unwrap_or_else(|| panic!("no log {want:?}"));
    let exe = std::env::current_exe().expect("this binary");
    let libs = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/release")
        .to_owned();
    let (plugins, _dir) = boundary::loaded(&libs).expect("the loop's plugins");
    match logs::bench_run(&libs, &log, &plugins) {
        Ok(figure) => println!("{figure}"),
        Err(e) => panic!("{}", e.0),
    }
}
