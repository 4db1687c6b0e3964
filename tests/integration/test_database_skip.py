"""A database skipped on purpose (not the preferred Always On replica), on the real broker with the real webhook
and SMTP servers: the real db-backup handler (with a stand-in SQL Server replica), upload, catalog and notifier.
The operator is told once, the set waits visibly, and the backfill command from the hint completes it."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import SecretStr

from contracts import BackupDue, BackupDuePayload
from tests.fixtures.rabbit import run_cli, running, settings_for, tap, wait_for
from tests.fixtures.smtp_server import SMTP_PASSWORD, SMTP_USER, smtp_server  # noqa: F401 - fixture
from tests.fixtures.webhook_server import webhook_server  # noqa: F401 - fixture
from workers.app import App
from workers.engines.base import SKIPPED_NOT_PREFERRED, BackupResult
from workers.dbbackup.handler import SPEC, DbBackupHandler
from workers.runtime.worker import WorkerSpec
from workers.runtime.publisher import Publisher

pytestmark = pytest.mark.integration
SET_ID = "20261122T010000Z-5a1b0c0d"
WAITING = "waiting: appservice_metering skipped (not the preferred replica)"


class Replica:
    """A SQL Server replica as the engine sees it: databases of ``secondary`` are not preferred here."""

    name, server = "sqlserver", "sql2,1433"

    def __init__(self, secondary: set[str]) -> None:
        self.secondary = secondary

    def backup(self, database: str, staging_path: str, progress=None) -> BackupResult:
        if database in self.secondary:
            return BackupResult(database, staging_path, 0, 0.01, self.name, self.server,
                                skipped_reason=SKIPPED_NOT_PREFERRED)
        data = f"backup of {database}".encode() * 100
        Path(staging_path).write_bytes(data)
        return BackupResult(database, staging_path, len(data), 0.01, self.name, self.server,
                            checksum="sha256:" + hashlib.sha256(data).hexdigest())


def db_backup_on(*secondary: str):
    def factory(deps) -> WorkerSpec:
        handler = DbBackupHandler(deps.settings.database, deps.settings.staging, Replica(set(secondary)))
        return SPEC.bind(handler)
    return factory


def test_a_skipped_database_is_notified_once_keeps_the_set_waiting_and_the_backfill_completes_it(
        rabbit_vhost, tmp_path, webhook_server, smtp_server):  # noqa: F811 - fixtures
    webhook_server.reset()
    smtp_server.reset()
    settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            staging={"database_dir": str(tmp_path / "staging")},
                            database={"databases": ["appservice_hosting", "appservice_metering"]},
                            notify={"webhook_urls": [webhook_server.url("/ops/SECRET-TOKEN-7")],
                                    "smtp_host": "127.0.0.1", "smtp_port": smtp_server.port,
                                    "smtp_to": ["ops@example.org"], "smtp_username": SMTP_USER,
                                    "smtp_password": SMTP_PASSWORD})
    seen: list = []
    # Given a db-backup worker connected to the replica that is not preferred for appservice_metering
    app = App(settings, [db_backup_on("appservice_metering"), "upload", "catalog", "notifier",
                         tap(seen, "database-backed-up", "backup-set-completed", "job-failed")])
    with running(app):
        # When a database backup is due
        with Publisher(settings.broker) as pub:
            pub.publish(BackupDue(source="test", stamp="stamp1", correlation_id=SET_ID,
                                  payload=BackupDuePayload(backup_set_id=SET_ID, components=("databases",))))
        # Then the webhook and the mailbox get one warning naming the database, the reason and the fix
        wait_for(lambda: webhook_server.received() and smtp_server.messages, 30, what="skip notification")
        wait_for(lambda: (tmp_path / "store/stamp1" / SET_ID / "databases/appservice_hosting.bak").exists(), 30,
                 what="hosting artifact")
        # And `artifacts list` shows the set incomplete and why, instead of a silent wait
        listed = run_cli(settings, "artifacts", "list")
        assert listed.returncode == 0, listed.stderr
        assert "incomplete" in listed.stdout and WAITING in listed.stdout
        one = run_cli(settings, "artifacts", "list", "--set", SET_ID)
        assert "incomplete, 1 artifact(s); " + WAITING in one.stdout
        # When the same replica is asked again for that database (say a redelivered job), Then it skips again
        run_cli(settings, "publish", "database-backup-requested", "--stamp", "stamp1", "--set-id", SET_ID,
                "-p", "database=appservice_metering")
        wait_for(lambda: sum(e.type == "database-backed-up" for e in seen) == 3, 30, what="second skip")
    note = webhook_server.received()[0].json
    assert note["severity"] == "warning" and note["error_class"] == "DatabaseSkipped"
    assert note["backup_set_id"] == SET_ID and "appservice_metering" in note["message"]
    assert "not the preferred replica" in note["message"] and "APPSVC_DR_DATABASE__SERVER" in note["hint"]
    mail = smtp_server.messages[0]
    assert "WARNING" in mail.message.get("Subject") and "appservice_metering" in mail.message.get("Subject")
    backfill = f"appsvc-dr publish database-backup-requested --stamp stamp1 --set-id {SET_ID} -p " \
               "database=appservice_metering"
    assert backfill in " ".join(mail.body.split())
    # Given the operator pointed a db-backup worker at the preferred replica
    app = App(settings, [db_backup_on(), "upload", "catalog", "notifier",
                         tap(seen, "database-backed-up", "backup-set-completed", "job-failed")])
    with running(app):
        # When they run the backfill command from the notification
        out = run_cli(settings, *backfill.split()[1:])
        assert out.returncode == 0, out.stderr
        # Then the set completes normally
        wait_for(lambda: any(e.type == "backup-set-completed" for e in seen), 30, what="set completed")
    listed = run_cli(settings, "artifacts", "list")
    assert "complete " in listed.stdout and "waiting" not in listed.stdout
    # And the operator was told exactly once (the repeated skip sent nothing), never with a secret in it
    assert [e.payload.error_class for e in seen if e.type == "job-failed"] == ["DatabaseSkipped"]
    assert len(webhook_server.received()) == 1 and len(smtp_server.messages) == 1
    everything = webhook_server.received()[0].body.decode() + mail.content.decode(errors="replace")
    assert "SECRET-TOKEN" not in everything and SMTP_PASSWORD not in everything


def always_on(tmp_path: Path, secondary_reachable: bool = True):
    """A db-backup worker whose real SQL Server engine reaches two simulated replicas through the listener
    ``aglisten`` (Prefer Secondary, the default); SQL Server writes to the local staging directory."""
    from tests.sqlsim import PASSWORD, AvailabilityGroup, Replica, Simulator, app_service_server
    from tests.sqlsim.network import Network
    from workers.engines import SqlServerEngine

    ag = AvailabilityGroup("ag1", listener="aglisten",
                           replicas={"sql01": Replica("PRIMARY"), "sql02": Replica("SECONDARY")})
    sims = {}
    for name in ag.replicas:
        server = app_service_server(tmp_path / "disks", name=name)
        server.ag = ag
        for database in server.databases.values():
            database.ag_name = "ag1"
        sims[name] = Simulator(server)
    if not secondary_reachable:
        sims["sql02"].refuse("08001", "TCP Provider: No such host is known.")
    network = Network(sims)

    def factory(deps) -> WorkerSpec:
        database = deps.settings.database.model_copy(update={"engine": "sqlserver", "server": "aglisten",
                                                             "username": "backup", "password": SecretStr(PASSWORD),
                                                             "multi_subnet_failover": True})
        return SPEC.bind(DbBackupHandler(database, deps.settings.staging,
                                         SqlServerEngine(database, connect=network.connect)))
    return factory, sims


@pytest.mark.parametrize("reachable", [True, False])
def test_through_the_listener_the_preferred_secondary_backs_up_or_the_skip_explains_the_preference(
        rabbit_vhost, tmp_path, reachable):
    settings = settings_for(rabbit_vhost, store={"kind": "local", "local_path": str(tmp_path / "store")},
                            staging={"database_dir": str(tmp_path / "staging")},
                            database={"databases": ["appservice_hosting", "appservice_metering"]})
    seen: list = []
    # Given a db-backup worker configured with the AG listener, the AG preferring secondaries
    factory, sims = always_on(tmp_path, secondary_reachable=reachable)
    app = App(settings, [factory, "upload", "catalog",
                         tap(seen, "database-backed-up", "backup-set-completed", "job-failed")])
    with running(app):
        # When a database backup is due
        with Publisher(settings.broker) as pub:
            pub.publish(BackupDue(source="test", stamp="stamp1", correlation_id=SET_ID,
                                  payload=BackupDuePayload(backup_set_id=SET_ID, components=("databases",))))
        if reachable:
            # Then both databases are backed up on the secondary and the set completes
            wait_for(lambda: any(e.type == "backup-set-completed" for e in seen), 30, what="set completed")
        else:
            wait_for(lambda: sum(e.type == "job-failed" for e in seen) == 2, 30, what="skip warnings")
    backed_up = [e.payload for e in seen if e.type == "database-backed-up"]
    assert sorted(p.database for p in backed_up) == ["appservice_hosting", "appservice_metering"]
    if reachable:
        assert {p.server for p in backed_up} == {"sql02,1433"} and not any(p.skipped_reason for p in backed_up)
        assert len(sims["sql02"].statements("BACKUP")) == 2 and sims["sql01"].statements("BACKUP") == []
        return
    # Else nothing is backed up on the primary (the preference excludes it while a secondary is in the AG) and
    # the operator's warning names the preference, the unreachable replica and the fixes
    assert all(s.statements("BACKUP") == [] for s in sims.values())
    warning = next(e.payload for e in seen if e.type == "job-failed")
    assert "Prefer Secondary" in warning.message and "sql02 (secondary, priority 50, connected): unreachable" \
        in warning.message
    assert "AG_REPLICA_SERVERS" in warning.hint and "AG_OVERRIDE" in warning.hint
