#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: set up (packages, the .venv with the Python package, RabbitMQ,
# PostgreSQL; see deploy/setup.sh), then run the main job on the embedded default — every worker against the
# local RabbitMQ with a local-directory store under ./demo-store — and print what the workers did. Setup installs
# Azurite into .tools/azurite: the demo then starts it on loopback and includes the Function Apps storage
# component (a made-up account), drills it and restores it into a second account; without it, it says it skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
exec "${VENV:-.venv}/bin/appsvc-dr" demo --dir ./demo-store "$@"
