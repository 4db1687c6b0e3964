#!/usr/bin/env python3
"""Create or update appservice-dr's RabbitMQ users, one per producer role, from definitions.json.

Least privilege on the broker: the rotation hook may publish only ``secrets-rotated``, the scheduler only
``backup-due``, each worker only its own follow-up events (RabbitMQ topic permissions on the ``appsvc-dr``
exchange), and each worker consumes only its own queue. ``definitions.json`` (RabbitMQ's definitions format,
next to this file) is the source of truth; it carries no passwords (``password_hash`` is empty, so a user
loaded from it cannot log in until this script sets its password).

Passwords come from one env file per role, ``<role>.env`` in ``--env-dir`` (the same file the role's
container reads: ``APPSVC_DR_BROKER__USERNAME`` / ``APPSVC_DR_BROKER__PASSWORD``), where ``<role>`` is the
definitions user name without the ``appsvc-dr-`` prefix. The env file's user name is the one created, so a
site may rename users without editing definitions.json. The admin login is ``RABBITMQ_DEFAULT_USER`` /
``RABBITMQ_DEFAULT_PASS`` (what deploy/env/<env>/rabbitmq.env gives the broker).

    RABBITMQ_DEFAULT_USER=... RABBITMQ_DEFAULT_PASS=... \
        python3 deploy/rabbitmq/apply_users.py --url http://127.0.0.1:15672 --vhost / --env-dir deploy/env/dev/broker

Idempotent: run it after every change of a password or of definitions.json. Standard library only, so it
runs in the appservice-dr image (compose service ``rabbitmq-users``) or on any host with Python 3.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PREFIX = "appsvc-dr-"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (``#`` comments and blank lines skipped), as docker-compose reads an env_file."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def role_logins(definitions: dict, env_dir: Path) -> dict[str, tuple[str, str]]:
    """definitions user name -> (user name to create, password), from ``<role>.env``."""
    logins = {}
    for user in definitions["users"]:
        role = user["name"].removeprefix(PREFIX)
        path = env_dir / f"{role}.env"
        if not path.is_file():
            raise SystemExit(f"no login for RabbitMQ user {user['name']}: create {path} with "
                             "APPSVC_DR_BROKER__USERNAME and APPSVC_DR_BROKER__PASSWORD")
        values = read_env_file(path)
        name, password = values.get("APPSVC_DR_BROKER__USERNAME", ""), values.get("APPSVC_DR_BROKER__PASSWORD", "")
        if not name or not password:
            raise SystemExit(f"{path}: APPSVC_DR_BROKER__USERNAME and APPSVC_DR_BROKER__PASSWORD must both be set")
        logins[user["name"]] = (name, password)
    return logins


class Api:
    """The management HTTP API as the admin user."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url.rstrip("/") + "/api"
        self._auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def call(self, method: str, path: str, body: object | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": self._auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if method == "DELETE" and exc.code == 404:
                return
            raise SystemExit(f"RabbitMQ management API: {method} {path} answered HTTP {exc.code} "
                             f"{exc.read(300).decode('utf-8', 'replace')}") from None


def apply(api: Api, definitions: dict, logins: dict[str, tuple[str, str]], vhost: str) -> list[str]:
    """Users with their tags and passwords, then their permissions and topic permissions on ``vhost``."""
    v = urllib.parse.quote(vhost, safe="")
    done = []
    for user in definitions["users"]:
        name, password = logins[user["name"]]
        tags = user.get("tags") or []
        api.call("PUT", f"/users/{urllib.parse.quote(name, safe='')}",
                 {"password": password, "tags": ",".join(tags) if isinstance(tags, list) else tags})
        done.append(name)
    for perm in definitions.get("permissions", []):
        name = urllib.parse.quote(logins[perm["user"]][0], safe="")
        api.call("PUT", f"/permissions/{v}/{name}",
                 {k: perm[k] for k in ("configure", "write", "read")})
    for user in definitions["users"]:   # replace, not merge: a permission dropped from the file goes away
        api.call("DELETE", f"/topic-permissions/{v}/{urllib.parse.quote(logins[user['name']][0], safe='')}")
    for perm in definitions.get("topic_permissions", []):
        name = urllib.parse.quote(logins[perm["user"]][0], safe="")
        api.call("PUT", f"/topic-permissions/{v}/{name}",
                 {k: perm[k] for k in ("exchange", "write", "read")})
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:15672", help="management API base URL")
    parser.add_argument("--vhost", default="/")
    parser.add_argument("--definitions", type=Path, default=HERE / "definitions.json")
    parser.add_argument("--env-dir", type=Path, required=True, help="directory holding <role>.env")
    args = parser.parse_args(argv)
    admin, admin_password = os.environ.get("RABBITMQ_DEFAULT_USER"), os.environ.get("RABBITMQ_DEFAULT_PASS")
    if not admin or not admin_password:
        raise SystemExit("set RABBITMQ_DEFAULT_USER and RABBITMQ_DEFAULT_PASS (the broker's admin login)")
    definitions = json.loads(args.definitions.read_text(encoding="utf-8"))
    logins = role_logins(definitions, args.env_dir)
    users = apply(Api(args.url, admin, admin_password), definitions, logins, args.vhost)
    print(f"RabbitMQ users on vhost {args.vhost!r}: {', '.join(users)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
