//! One `openai` provider turn against a local server and one MCP tool call
//! round trip, alone (the `[r1]`/`[r2]` figures of `zu-bench`), for
//! profilers: `target/release/examples/profile_real`. Prints JSON.

use zu_bench::{boundary, real};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let libs = boundary::library_dir().expect("the plugin libraries are built");
    let turn = real::bench_provider_turn(&libs, 10_000).expect("provider turn");
    let mcp = real::bench_mcp_call(2_000).expect("MCP call");
    println!("{}", serde_json::json!({"provider_turn": turn, "mcp_tool_call": mcp}));
}
