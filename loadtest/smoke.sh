#!/usr/bin/env bash
# The CI smoke run: every load scenario against all three servers for a few
# seconds with small N, and relay and churn on three-node Pitboss and Socket.IO
# clusters (private redis-server and PostgreSQL: apt-get install redis-server
# postgresql), on debug builds. Non-zero on any loss, duplicate, error or server
# that fails to start.
set -euo pipefail
cd "$(dirname "$0")/.."
(cd loadtest/socketio && npm ci --no-audit --no-fund)
cargo build --locked -p pitboss-server -p pitboss-loadtest
exec "${CARGO_TARGET_DIR:-target}/debug/loadtest" smoke "$@"
