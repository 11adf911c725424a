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
mkdir -p target/plugins
chmod go-w target/plugins
cp target/release/*zu_plugin_*."$ext" target/plugins/
zu=$PWD/target/release/zu
export ZU_PLUGIN_PATH=$PWD/target/plugins

echo "== zu plugins"
"$zu" plugins --strict

cd examples/demo
echo "== zu run (examples/demo/zu.toml)"
rm -f zu.db zu.db-wal zu.db-shm
status=0
"$zu" run || status=$?

echo "== zu events"
"$zu" events
exit "$status"
