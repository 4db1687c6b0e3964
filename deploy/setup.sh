#!/usr/bin/env bash
# Bring a fresh Debian 12 machine to the point where appservice-dr runs and its tests pass:
# apt packages, a virtual environment (.venv) holding the Python package with its test extras, and
# RabbitMQ/PostgreSQL started if they are down. Idempotent; safe to run again. Used by deploy/demo.sh and
# deploy/test.sh (the README's two commands).
#
# Debian's python3 refuses system-wide `pip install` (PEP 668, "externally-managed-environment"), so the
# package goes into a venv made from Debian's /usr/bin/python3 (python3-venv). Settings (environment):
#   PYTHON  interpreter the venv is made from (default /usr/bin/python3, Debian's; any python >= 3.11)
#   VENV    where the venv lives (default .venv in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
PYTHON=${PYTHON:-/usr/bin/python3}
VENV=${VENV:-.venv}

APT_PACKAGES=(curl rabbitmq-server postgresql postgresql-client samba smbclient prometheus unixodbc-dev
              odbc-postgresql tdsodbc rclone restic docker-compose python3 python3-venv python3-dev gcc)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The virtual environment: made again if it is missing, broken, or from another interpreter than $PYTHON.
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || { echo "setup: $PYTHON is older than Python 3.11; set PYTHON to a newer one" >&2; exit 1; }
base=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
if ! "$VENV/bin/python" -c "import sys; assert sys.base_prefix == '$base'" 2>/dev/null; then
    echo "setup: creating the virtual environment $VENV from $PYTHON ($("$PYTHON" --version))"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
# Install (editable, with the test extras) when pyproject.toml changed since the last install into this venv.
stamp="$VENV/.appsvc-dr-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "setup: installing the package (editable, with its test extras) into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    "$VENV/bin/appsvc-dr" --help >/dev/null || { echo "setup: $VENV/bin/appsvc-dr does not run" >&2; exit 1; }
    echo "$want" >"$stamp"
fi

# Azurite (the Azure Storage emulator) for the `functions` component's tests, from the npm registry into
# .tools/azurite (git-ignored, project-local; Node.js and npm come from apt). Installed again when the pinned
# major is missing; AZURITE_VERSION overrides the spec.
AZURITE_VERSION=${AZURITE_VERSION:-3}
if ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing nodejs and npm (for Azurite)"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if ! .tools/azurite/node_modules/.bin/azurite --version 2>/dev/null | grep -q "^${AZURITE_VERSION%%.*}\."; then
    echo "setup: installing Azurite ${AZURITE_VERSION} into .tools/azurite"
    mkdir -p .tools/azurite
    npm install --silent --no-audit --no-fund --no-save --prefix .tools/azurite "azurite@${AZURITE_VERSION}" >/dev/null
fi

# RabbitMQ: start it if it is down (no systemd here), then make sure the management API is on.
if ! rabbitmqctl -q status >/dev/null 2>&1; then
    if rabbitmqctl -q ping >/dev/null 2>&1; then
        # the node runs but its app was stopped (a broker-restart test killed between stop_app and start_app)
        echo "setup: starting the RabbitMQ app"
        rabbitmqctl -q start_app
    else
        echo "setup: starting RabbitMQ"
        rabbitmq-server -detached
    fi
    for _ in $(seq 1 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done
fi
rabbitmq-plugins -q enable rabbitmq_management >/dev/null
for _ in $(seq 1 60); do
    curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null && break; sleep 1
done
curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null || { echo "setup: RabbitMQ management API is not answering" >&2; exit 1; }

# RabbitMQ's Prometheus plugin: queue depths (the dead-letter queues) for Prometheus and the dashboard, on
# 127.0.0.1:15692 only, one series per queue (as deploy/rabbitmq/rabbitmq.conf sets for compose). The plugin
# reads its listener when it starts, so that is set first (per-object metrics after: loading the plugin
# resets them); both last until the broker restarts and every run of this script sets them again.
if ss -Hltn 'sport = :15692' 2>/dev/null | grep -qv '127\.0\.0\.1:15692'; then
    # enabled before this script ran (a broker restart reads enabled_plugins): listening beyond loopback
    echo "setup: restarting rabbitmq_prometheus on 127.0.0.1 only"
    rabbitmq-plugins -q disable rabbitmq_prometheus >/dev/null   # (this also forgets its settings)
fi
rabbitmqctl -q eval 'application:set_env(rabbitmq_prometheus, tcp_config, [{port, 15692}, {ip, "127.0.0.1"}]).' >/dev/null
rabbitmq-plugins -q enable rabbitmq_prometheus >/dev/null
rabbitmqctl -q eval 'application:set_env(rabbitmq_prometheus, return_per_object_metrics, true).' >/dev/null
for _ in $(seq 1 30); do curl -sf http://127.0.0.1:15692/metrics >/dev/null && break; sleep 1; done
curl -sf http://127.0.0.1:15692/metrics >/dev/null || { echo "setup: RabbitMQ's Prometheus endpoint (127.0.0.1:15692) is not answering: rabbitmq-plugins enable rabbitmq_prometheus" >&2; exit 1; }

# PostgreSQL (the real database engine of the end-to-end tests and the demo).
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "setup: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
echo "setup: ready"
