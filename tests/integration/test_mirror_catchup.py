"""The mirror worker's timer against a real second S3 server: a secondary that was down while sets were made,
whose retried copy jobs gave up, comes back while no backups run — the timer catches it up on its own, and the
backlog and lag gauges follow."""
from __future__ import annotations

import contextlib

import pytest

from tests.fixtures.rabbit import running, vhost, wait_for
from tests.fixtures.s3server import moto_s3_server
from tests.integration.test_mirror_targets import STAMP, Site, s3_target

pytestmark = pytest.mark.integration


def _gauge(app, name: str) -> float | None:
    return app.metrics.registry.get_sample_value(name, {"target": "dr-s3"})


def test_a_secondary_back_while_no_backups_run_is_caught_up_by_the_timer(tmp_path, s3_server):
    with vhost() as name, contextlib.ExitStack() as stack:
        secondary = stack.enter_context(moto_s3_server())
        port = secondary.port
        # Given copy jobs retried for 2 s only, and the mirror's timer ticking every second
        site = Site(tmp_path, name, s3_server, [s3_target(secondary, "dr-s3", "dr-copy")], retry_for="2s",
                    catch_up_interval="1s", catch_up_objects=4)
        with running(site.app()) as app:
            first = site.backup()
            site.mirrored("dr-s3", first)
            # And the secondary stopped while two more sets are made
            secondary.stop()
            sets = [site.backup() for _ in range(2)]
            # Then the copy jobs of those sets give up (job-failed from the mirror) and the backlog is exported
            wait_for(lambda: {e.correlation_id for e in site.seen if e.type == "job-failed"
                              and e.payload.worker == "mirror"} >= set(sets), 60, what="the mirror jobs to give up")
            wait_for(lambda: (_gauge(app, "appsvc_dr_mirror_backlog") or 0) > 0, 30, what="a backlog")
            assert (_gauge(app, "appsvc_dr_mirror_lag_seconds") or 0) > 0
            published = len(site.seen)
            # When the secondary comes back empty on the same port, and no event arrives
            stack.enter_context(moto_s3_server(port=port))
            # Then the timer copies everything (in ticks of at most 4 objects) and the gauges return to 0
            wait_for(lambda: _gauge(app, "appsvc_dr_mirror_backlog") == 0, 120, interval=0.5,
                     what="the timer to drain the backlog")
            assert _gauge(app, "appsvc_dr_mirror_lag_seconds") == 0
            assert not [e for e in site.seen[published:] if e.type == "backup-set-completed"]
        # And `mirror verify --read-data` reports the secondary identical to the primary
        out = site.cli("mirror", "verify", "--stamp", STAMP, "--read-data")
        assert out.returncode == 0 and "dr-s3 (s3://dr-copy): identical" in out.stdout, out.stdout + out.stderr

