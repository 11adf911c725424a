#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the tests need when it is
# missing (a C compiler for the fixture libraries, the PostgreSQL server the
# postgres tests start a throwaway instance of, Node and npm for the MCP
# servers from the npm registry the MCP tests call, Chromium and chromedriver
# for the browser test of `zu serve`), then `cargo test --workspace`.
# Set ZU_TEST_POSTGRES_URL to use a running server instead.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v gcc >/dev/null || missing+=(gcc)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v npm >/dev/null || missing+=(nodejs npm)
command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
if [ -z "${ZU_TEST_POSTGRES_URL:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    && ! command -v initdb >/dev/null; then
    missing+=(postgresql)
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/test.sh: installing ${missing[*]} (needed by the tests)" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null; then
        $sudo apt-get update -qq
        # A package's service is not started: the tests run their own server.
        DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    elif command -v dnf >/dev/null; then
        dnf_names=("${missing[@]/postgresql/postgresql-server}")
        $sudo dnf install -y "${dnf_names[@]/chromium-driver/chromedriver}"
    else
        echo "scripts/test.sh: install ${missing[*]} with your package manager, then run this again" >&2
        exit 1
    fi
fi

# The MCP reference servers, pinned (tests/src/mcp.rs installs the same if this did not).
bin=target/mcp-servers/node_modules/.bin
if [ ! -x "$bin/mcp-server-everything" ] || [ ! -x "$bin/mcp-server-filesystem" ]; then
    echo "scripts/test.sh: installing the MCP reference servers from the npm registry" >&2
    npm install --no-audit --no-fund --prefix target/mcp-servers \
        @modelcontextprotocol/server-everything@2026.8.31 @modelcontextprotocol/server-filesystem@2026.8.31 >&2
fi

exec cargo test --workspace "$@"
