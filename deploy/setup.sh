#!/usr/bin/env bash
# Bring a fresh Debian 12 machine to the point where appservice-dr runs and its tests pass:
# apt packages, the Python package with its test extras, and RabbitMQ/PostgreSQL started if they are down.
# Idempotent; safe to run again. Used by .ci/run and deploy/demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

APT_PACKAGES=(curl rabbitmq-server postgresql postgresql-client samba smbclient prometheus unixodbc-dev
              odbc-postgresql tdsodbc rclone restic docker-compose)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "setup: pip install -e .[test]"
python3 -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "Running pip as the 'root'" || true

# RabbitMQ: start it if it is down (no systemd here), then make sure the management API is on.
if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "setup: starting RabbitMQ"
    rabbitmq-server -detached
    for _ in $(seq 1 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done
fi
rabbitmq-plugins -q enable rabbitmq_management >/dev/null
for _ in $(seq 1 60); do
    curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null && break; sleep 1
done
curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null || { echo "setup: RabbitMQ management API is not answering" >&2; exit 1; }

# PostgreSQL (the real database engine of the end-to-end tests and the demo).
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "setup: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
echo "setup: ready"
