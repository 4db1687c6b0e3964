#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: set up (packages, Python package, RabbitMQ, PostgreSQL), then run
# the main job on the embedded default — every worker against the local RabbitMQ with a local-directory store
# under ./demo-store — and print what the workers did.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
exec python3 -m workers.cli demo --dir ./demo-store "$@"
