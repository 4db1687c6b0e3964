"""Each worker declares once which event models it handles; the topology's bindings are derived from that."""
from __future__ import annotations

from pathlib import Path

import pytest

from contracts import BackupDue, BackupDuePayload, Envelope, JobFailed
from workers.app import BUILTIN, builtin_bindings, topology_of
from workers.runtime.worker import JobContext, WorkerSpec

WORKERS = Path(__file__).resolve().parents[2] / "workers"


def test_every_builtin_worker_declares_its_models_and_the_bindings_come_from_there():
    # Given the built-in workers' declarations (read without building the workers)
    for name, builtin in BUILTIN.items():
        spec = builtin.declared()
        # Then each is keyed by event models and its handlers are methods of one handler class
        assert spec.name == name
        assert spec.models and all(issubclass(m, Envelope) for m in spec.models)
        owners = {h.__qualname__.rsplit(".", 1)[0] for h in spec.handlers.values()}
        assert len(owners) == 1, (name, owners)
    # And a site's topology binds each queue to exactly the declared event types
    declared = dict(topology_of([]))
    assert declared == builtin_bindings()
    assert declared["notifier"] == [JobFailed.event_type]
    assert "backup-due" in declared["db-backup"] and "database-backup-requested" in declared["db-backup"]


def test_a_spec_keyed_by_event_type_strings_is_refused_with_the_fix():
    # When a worker is declared the old way
    with pytest.raises(TypeError) as err:
        WorkerSpec("w", {"backup-due": lambda e, ctx: None})
    # Then the error says what to key it by
    assert "event model classes" in str(err.value)


def test_bind_gives_each_declared_method_the_handler_object():
    class Handler:
        def __init__(self) -> None:
            self.seen: list[Envelope] = []

        def backup_due(self, event: BackupDue, ctx: JobContext) -> None:
            self.seen.append(event)

    # Given a spec declared with an unbound method, bound to an instance
    target = Handler()
    spec = WorkerSpec("w", {BackupDue: Handler.backup_due}, concurrency=3).bind(target)
    event = BackupDue(source="t", stamp="s", correlation_id="c", payload=BackupDuePayload(backup_set_id="c"))
    # When the runner looks the handler up for an event and calls it
    spec.handler_for(event)(event, None)
    # Then the instance got the typed event, and the declaration's options are kept
    assert target.seen == [event] and spec.target is target and spec.concurrency == 3
    assert spec.event_types == ["backup-due"]


def test_no_handler_checks_the_type_of_its_event_itself():
    # The runner passes each handler an instance of the model it is declared for
    offenders = [f"{p.relative_to(WORKERS.parent)}:{n}" for p in sorted(WORKERS.rglob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1) if "assert isinstance(event" in line]
    assert offenders == []


def test_the_secrets_worker_starts_with_its_rotation_counters_at_zero(tmp_path):
    # Given the secrets worker built by the composition (a local store, a certificate to encrypt with)
    from tests.unit.certs import make_cert
    from workers.app import Deps
    from workers.config import Settings
    from workers.middleware.metrics import Metrics
    from workers.storage.settings import EncryptionSettings, StoreSettings
    (tmp_path / "cert.pem").write_bytes(make_cert("specs").cert_pem)
    metrics = Metrics()
    settings = Settings(stamp="stamp1", store=StoreSettings(kind="local", local_path=tmp_path / "store"),
                        encryption=EncryptionSettings(certificate=tmp_path / "cert.pem"))
    BUILTIN["secrets"](Deps(settings, metrics))
    # Then both outcomes are exported at 0 before the first rotation (so increase() sees the first one)
    for outcome in ("stored", "duplicate"):
        assert metrics.registry.get_sample_value(
            "appsvc_dr_secrets_rotations_total", {"stamp": "stamp1", "outcome": outcome}) == 0.0
