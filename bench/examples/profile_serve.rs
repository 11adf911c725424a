//! `zu serve` on a 1,000,000-event sqlite log alone (the `[s1]` figures of
//! `zu-bench`; `EVENTS=100000` for a smaller log). Prints JSON.

use zu_bench::{boundary, serve};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let libs = boundary::library_dir().expect("the plugin libraries are built");
    let events = std::env::var("EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let out = serve::bench_serve(&libs, &libs.join("zu"), events).expect("serve");
    println!("{out}");
}
