#!/usr/bin/env bash
# The main job on a fresh machine: build the host and the plugins, put the
# plugin libraries in a plugin directory, and run the host on it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p zu-host -p zu-plugin-scripted -p zu-plugin-checks

plugins=target/plugins
mkdir -p "$plugins"
chmod go-w "$plugins"
case "$(uname -s)" in
  Darwin) ext=dylib ;;
  MINGW*|MSYS*|CYGWIN*) ext=dll ;;
  *) ext=so ;;
esac
cp target/release/*zu_plugin_*."$ext" "$plugins"/
echo "plugin directory: $plugins"

./target/release/zu plugins --plugins "$plugins" --strict
