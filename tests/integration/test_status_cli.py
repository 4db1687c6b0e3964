"""`appsvc-dr status` as a real subprocess against a signed local-directory store and the real RabbitMQ: a healthy,
a late and a failed stamp, their output and exit codes."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from tests.fixtures.rabbit import settings_for
from tests.integration.test_catalog_cli import Env
from workers.artifacts.lifecycle import FAILED, write_terminal
from workers.app import builtin_bindings, site_workers
from workers.runtime import dlq
from workers.runtime.connect import declare_topology
from workers.runtime.topology import Topology

pytestmark = pytest.mark.integration


def make_set(env: Env, stamp: str, hours_ago: float, *, complete: bool) -> str:
    return env.make_set(hours_ago / 24, complete=complete, stamp=stamp)


@pytest.fixture
def site(tmp_path, rabbit_vhost):
    """The store, and a broker vhost with the site's queues declared (no dead letters)."""
    env = Env(tmp_path)
    settings = settings_for(rabbit_vhost)
    workers = site_workers(settings.components)
    declare_topology(settings.broker, Topology.from_settings(settings.broker, settings.retry),
                     sorted(builtin_bindings(workers).items()))
    assert set(dlq.counts(settings.broker, settings.retry, workers).values()) == {0}
    return env, rabbit_vhost


def status(env: Env, vhost: str, *args: str):
    return env.cli("status", *args, APPSVC_DR_BROKER__VHOST=vhost)


def test_a_healthy_stamp_says_all_well_and_exits_0(site):
    env, vhost = site
    # Given a stamp whose newest set completed an hour ago
    done = make_set(env, "healthy", 1, complete=True)
    # When the operator asks for its status
    out = status(env, vhost, "--stamp", "healthy")
    # Then the RPO is an hour, nothing needs attention, and the dead-letter queues are counted
    assert out.returncode == 0, out.stdout + out.stderr
    assert "RPO            1h00m (objective 26h00m)" in out.stdout
    assert f"newest set     {done}" in out.stdout and "1 complete" in out.stdout
    assert "dead letters   catalog 0, db-backup 0, fileshare 0, mirror 0, notifier 0, secrets 0, upload 0" in out.stdout
    assert "all well" in out.stdout and "ATTENTION" not in out.stdout


def test_a_late_stamp_shows_the_breached_rpo_and_the_overdue_set_and_exits_1(site):
    env, vhost = site
    # Given a stamp whose newest complete set is 30 h old and whose next set, 7 h old, still waits for its dump
    make_set(env, "late", 30, complete=True)
    waiting = make_set(env, "late", 7, complete=False)
    # When the operator asks for its status
    out = status(env, vhost, "--stamp", "late")
    # Then the breached RPO and the overdue set with what it waits for are shown, and the exit code says attention
    assert out.returncode == 1, out.stdout + out.stderr
    assert "RPO            30h00m (objective 26h00m)  << ATTENTION" in out.stdout
    assert f"in-progress    {waiting}: waiting for databases ×1; deadline" in out.stdout
    assert "<< PAST DEADLINE" in out.stdout
    assert "late: RPO breached: the newest complete set is 30h00m old" in out.stdout


def test_a_failed_stamp_shows_the_reason_and_how_to_fix_and_exits_1(site):
    env, vhost = site
    # Given a stamp whose newest set failed after an older one completed
    make_set(env, "broken", 3, complete=True)
    failed = make_set(env, "broken", 1, complete=False)
    write_terminal(env.store.backend, "broken", failed, FAILED, {
        "failed_at": datetime.now(timezone.utc).isoformat(), "writer": "test",
        "reason": "the db-backup worker dead-lettered database-backup-requested: login failed",
        "hint": "grant the backup login db_backupoperator"})
    # When the operator asks for its status, as text and as JSON
    out, js = status(env, vhost, "--stamp", "broken"), status(env, vhost, "--stamp", "broken", "--json")
    # Then the failed set, its reason and how to fix it are shown, and the exit code says attention
    assert out.returncode == 1 and js.returncode == 1, out.stdout + out.stderr
    assert f"FAILED         {failed} at" in out.stdout and "login failed" in out.stdout
    assert "how to fix: grant the backup login db_backupoperator" in out.stdout
    data = json.loads(js.stdout)
    [stamp] = data["stamps"]
    assert stamp["counts"]["failed"] == 1 and stamp["problems"][0]["backup_set_id"] == failed
    assert stamp["rpo_seconds"] == pytest.approx(3 * 3600, abs=120) and data["exit_code"] == 1
    assert data["dead_letters"]["upload"] == 0 and stamp["store_usage"]["objects"] > 0


def test_a_store_that_cannot_be_read_exits_2_with_the_fix(site, tmp_path):
    env, vhost = site
    # Given a store path that is a file, not a directory
    (tmp_path / "not-a-dir").write_text("x")
    # When the operator asks for the status
    out = env.cli("status", APPSVC_DR_BROKER__VHOST=vhost, APPSVC_DR_STORE__LOCAL_PATH=str(tmp_path / "not-a-dir"))
    # Then it exits 2 (no status could be read), saying what to fix
    assert out.returncode == 2, out.stdout + out.stderr
    assert "not a directory" in out.stderr and "APPSVC_DR_STORE__LOCAL_PATH" in out.stderr


def test_status_shows_each_stores_capacity_and_asks_for_room_when_the_next_set_will_not_fit(site, tmp_path):
    env, vhost = site
    # Given a stamp with a complete set, a primary whose quota leaves 100 bytes of room, and a mirror target
    make_set(env, "full", 1, complete=True)
    used = sum(info.size for info in env.store.backend.list(""))
    target = {"name": "dr-site", "kind": "local", "local_path": str(tmp_path / "dr-site")}
    extra = {"APPSVC_DR_BROKER__VHOST": vhost, "APPSVC_DR_STORE__QUOTA_BYTES": str(used + 100),
             "APPSVC_DR_MIRROR__TARGETS": json.dumps([target])}
    # When the operator asks for its status, as text and as JSON
    out = env.cli("status", "--stamp", "full", **extra)
    js = env.cli("status", "--stamp", "full", "--json", **extra)
    # Then both stores are shown, the primary with exactly the room its quota leaves, and the exit code asks for room
    assert out.returncode == 1 and js.returncode == 1, out.stdout + out.stderr
    assert "  capacity       primary (" in out.stdout and "0.1 KB free" in out.stdout
    assert "<< the next set will not fit" in out.stdout and "\n                 dr-site (" in out.stdout
    assert "full: store primary will not fit the next backup set" in out.stdout
    [stamp] = json.loads(js.stdout)["stamps"]
    primary, dr_site = stamp["capacity"]
    assert (primary["store"], primary["free_bytes"], primary["fits_next"]) == ("primary", 100, False)
    assert primary["used_bytes"] == used and primary["next_set_bytes"] > 100 and primary["measured_by"] == "statvfs+quota"
    assert dr_site["store"] == "dr-site" and dr_site["used_bytes"] == 0 and dr_site["error"] is None
