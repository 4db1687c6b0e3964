#!/usr/bin/env bash
# The README's test command on a fresh Debian 12 machine: set up (idempotent: apt packages, the .venv made from
# Debian's /usr/bin/python3 with the package and its test extras, RabbitMQ and PostgreSQL started), then run
# the test suite with the venv's Python. Arguments go to pytest (e.g. a test file, -k, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
venv=$(cd "${VENV:-.venv}" && pwd)
# Tools the tests look up by name (moto_server, appsvc-dr) come from the venv too.
export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" -m pytest -q "$@"
