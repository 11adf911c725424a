#!/usr/bin/env bash
# The main job on a fresh machine: build the host and every plugin, put the
# plugin libraries in a plugin directory, list them, run the demo task of
# examples/demo end to end (scripted provider, file_read, the checks and
# validators, a SQLite event log), then show the run's events.
set -euo pipefail
cd "$(dirname "$0")/.."

plugins=(scripted checks files http validators sqlite jsonl postgres models)
cargo build --release -p zu-cli "${plugins[@]/#/-pzu-plugin-}"

case "$(uname -s)" in
  Darwin) ext=dylib ;;
  MINGW*|MSYS*|CYGWIN*) ext=dll ;;
  *) ext=so ;;
esac
mkdir -p target/plugins target/demo
chmod go-w target/plugins
cp target/release/*zu_plugin_*."$ext" target/plugins/
zu=$PWD/target/release/zu

echo "== zu plugins"
"$zu" plugins --plugins target/plugins --strict

echo "== zu run (examples/demo/zu.toml)"
rm -f target/demo/zu.db target/demo/zu.db-wal target/demo/zu.db-shm
status=0
(cd examples/demo && "$zu" run) || status=$?

echo "== zu events"
"$zu" events --plugins target/plugins --sink sqlite --sink-config '{"path": "target/demo/zu.db"}'
exit "$status"
