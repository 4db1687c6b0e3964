"""`appsvc-dr dlq list|show` against the real RabbitMQ with more dead letters than --limit: counts by reason
first, pages ("N more"), and streams the letters with bounded memory."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pika
import pytest

from tests.fixtures.rabbit import REPO, env_for, queue_count, run_cli, wait_for
from workers.runtime.amqp import connection_parameters
from workers.runtime.topology import Topology

pytestmark = pytest.mark.integration

WORKER = "flaky"


def dead_letter(channel, queue: str, reason: str, body: bytes) -> str:
    """A message in the worker's dead-letter queue with the headers the runtime writes when it dead-letters."""
    event_id = str(uuid.uuid4())
    headers = {"x-dr-reason": reason, "x-dr-error": f"{reason} failure", "x-dr-error-class": "PermanentError",
               "x-dr-hint": "Fix it, then replay.", "x-dr-worker": WORKER, "x-dr-attempts": 1}
    channel.basic_publish("", queue, body, pika.BasicProperties(message_id=event_id, type="backup-due",
                                                                headers=headers, delivery_mode=2))
    return event_id


@pytest.fixture
def dlq(settings):
    """The worker's topology declared; returns (channel, dead-letter queue name)."""
    topology = Topology.from_settings(settings.broker, settings.retry)
    with pika.BlockingConnection(connection_parameters(settings.broker)) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        topology.declare(channel, [(WORKER, ["backup-due"])])
        yield channel, topology.queues(WORKER).dlq


def test_dlq_list_counts_reasons_first_pages_and_says_how_many_more(settings, dlq):
    # Given 7 letters dead-lettered as permanent and 5 as retries-exhausted
    channel, queue = dlq
    ids = [dead_letter(channel, queue, "permanent" if i < 7 else "retries-exhausted", b'{"n": %d}' % i)
           for i in range(12)]
    wait_for(lambda: queue_count(settings.broker.vhost, queue) == 12, 20, what="12 dead letters")
    # When the operator lists them with --limit 5
    listing = run_cli(settings, "dlq", "list", WORKER, "--limit", "5")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    # Then the first line counts them by reason, 5 rows follow, and the last line says 7 more
    assert lines[0] == f"12 dead letter(s) in {queue}: permanent 7, retries-exhausted 5"
    rows = [line for line in lines if any(i in line for i in ids)]
    assert len(rows) == 5 and all(ids[n] in rows[n] for n in range(5))
    assert lines[-1].startswith("... 7 more (not shown; --limit 12")
    # And the JSON form says the same, and nothing left the queue
    data = json.loads(run_cli(settings, "dlq", "show", WORKER, "--limit", "3", "--json").stdout)
    assert (data["total"], data["by_reason"], data["shown"], data["more"]) == (
        12, {"permanent": 7, "retries-exhausted": 5}, 3, 9)
    assert [m["event_id"] for m in data["messages"]] == ids[:3] and json.loads(data["messages"][0]["body"]) == {"n": 0}
    assert queue_count(settings.broker.vhost, queue) == 12


def _peak_rss_kib(settings, *args: str) -> tuple[int, str]:
    """Peak RSS (KiB) of a fresh interpreter running `appsvc-dr ARGS`, and its output."""
    code = ("import resource, sys; from workers.cli import main; rc = main(sys.argv[1:]); "
            "sys.stdout.flush(); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
            "sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, *args], env=env_for(settings), cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return int(result.stderr.strip().splitlines()[-1]), result.stdout


def test_dlq_list_streams_large_letters_with_bounded_memory(settings, dlq):
    # Given an interpreter's peak memory listing an empty dead-letter queue
    channel, queue = dlq
    baseline, _ = _peak_rss_kib(settings, "dlq", "list", WORKER)
    # And 24 letters of 4 MiB each (96 MiB)
    size, count = 4 << 20, 24
    for i in range(count):
        dead_letter(channel, queue, "permanent", b'{"pad": "' + b"x" * size + b'"}')
    wait_for(lambda: queue_count(settings.broker.vhost, queue) == count, 60, what="large dead letters")
    # When all of them are listed (--limit above the count) and shown
    listed_peak, listing = _peak_rss_kib(settings, "dlq", "list", WORKER, "--limit", "1000")
    shown_peak, shown = _peak_rss_kib(settings, "dlq", "show", WORKER, "--limit", "1000")
    # Then every letter is printed, but memory grew by far less than the letters' total size
    assert listing.splitlines()[0] == f"{count} dead letter(s) in {queue}: permanent {count}"
    assert len([line for line in listing.splitlines() if "permanent failure" in line]) == count
    assert shown.count('"pad"') == count
    total_kib = size * count // 1024
    assert listed_peak - baseline < total_kib / 3, (baseline, listed_peak, total_kib)
    assert shown_peak - baseline < total_kib / 3, (baseline, shown_peak, total_kib)
    assert queue_count(settings.broker.vhost, queue) == count
