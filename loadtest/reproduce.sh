#!/usr/bin/env bash
# Reproduces the published table (docs/performance.md): release build, the
# Socket.IO relay's packages, then every table scenario against Pitboss and both
# reference servers, the generator on CPU 0 and the servers on CPU 1.
# Extra arguments go to `loadtest` before the subcommand (such as --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p pitboss-server -p pitboss-loadtest
(cd loadtest/socketio && npm ci --no-audit --no-fund)
exec taskset -c 0 target/release/loadtest --server-cpus 1 "$@" table
