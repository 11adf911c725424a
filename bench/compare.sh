#!/usr/bin/env bash
# Runs the Python reference's benchmark (zu-core 0.2.0, ../shared/bench/python-anchor)
# and zu-bench alternately on this machine, ROUNDS times each (default 3), then
# prints a table of Rust/Python ratios per figure with their spread.
#
#   bash bench/compare.sh            # full sizes (N = 100k); about 5 minutes
#   bash bench/compare.sh --quick    # N = 20k
#
# The Python side runs in a venv (ZU_ANCHOR_VENV, default /tmp/zu-anchor-venv),
# created with zu-core==0.2.0 from PyPI if missing. Results stay in
# target/bench-compare/ (py-N.json, rs-N.json, table.md).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
[ "${1:-}" = "--quick" ] && quick=(--quick)
rounds=${ROUNDS:-3}
venv=${ZU_ANCHOR_VENV:-/tmp/zu-anchor-venv}
anchor=${ZU_ANCHOR:-../shared/bench/python-anchor/bench.py}
out=target/bench-compare

[ -f "$anchor" ] || { echo "compare.sh: no Python anchor at $anchor (set ZU_ANCHOR)" >&2; exit 2; }
if [ ! -x "$venv/bin/python" ]; then
  echo "compare.sh: creating $venv with zu-core==0.2.0" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q zu-core==0.2.0
fi
cargo build --release -p zu-bench -p zu-cli -p zu-plugin-noop -p zu-plugin-sqlite -p zu-plugin-jsonl -p zu-plugin-postgres -p zu-plugin-models
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  echo "== round $r/$rounds: python" >&2
  "$venv/bin/python" "$anchor" "${quick[@]}" --out "$out/py-$r.json" > /dev/null
  "$venv/bin/python" bench/replay_anchor.py --out "$out/py-replay-$r.json" > /dev/null
  echo "== round $r/$rounds: rust" >&2
  target/release/zu-bench "${quick[@]}" --out "$out/rs-$r.json" > /dev/null
done
python3 bench/compare.py "$out" "$rounds" | tee "$out/table.md"
