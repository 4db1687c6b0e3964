#!/usr/bin/env python3
"""Container health check: GET /healthz on the worker's metrics port. Exit 0 = healthy, 1 = unhealthy.

Reads APPSVC_DR_METRICS__HOST / APPSVC_DR_METRICS__PORT like the worker does (defaults 0.0.0.0 / 9464).
Usage: appsvc-dr-healthcheck [PATH]   (default /healthz; use /readyz for readiness)
"""
import os
import sys
import urllib.request

host = os.environ.get("APPSVC_DR_METRICS__HOST", "0.0.0.0")
if host in ("", "0.0.0.0", "::", "[::]"):
    host = "127.0.0.1"
elif ":" in host and not host.startswith("["):
    host = f"[{host}]"
port = os.environ.get("APPSVC_DR_METRICS__PORT", "9464")
path = sys.argv[1] if len(sys.argv) > 1 else "/healthz"
try:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=4) as response:
        sys.exit(0 if 200 <= response.status < 300 else 1)
except Exception as exc:  # connection refused, timeout, HTTP error: all unhealthy
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
