"""Queues beyond a peek, against Azurite and real RabbitMQ: by default at most 32 messages per queue are copied
and the backup says so (the result's fields and a warning naming the queue with "N of about M"); with
``queue_copy=receive`` every message is copied, the queue keeps all of them visible afterwards (each dequeue count
raised by one: the documented price), and a restore brings them all back."""
from __future__ import annotations

import uuid

import pytest
from azure.storage.queue import QueueServiceClient

from tests.fixtures.azurite import empty_account
from tests.fixtures.rabbit import running, tap, wait_for
from tests.integration.test_functions_azurite import TYPES, backup_due, worker_settings
from workers.app import App
from workers.artifacts.service import ArtifactStore
from workers.functions.backup import backup_account
from workers.functions.client import open_account
from workers.functions.restore import Restorer
from workers.runtime.publisher import Publisher
from workers.storage.local import LocalStore

pytestmark = pytest.mark.integration
MESSAGES = 45


@pytest.fixture
def big_queue(azurite):
    """A queue of MESSAGES messages in the source account, deleted afterwards (the account is shared by the
    session's tests: others must not meet a queue beyond a peek)."""
    name = f"big-queue-{uuid.uuid4().hex[:6]}"
    service = QueueServiceClient.from_connection_string(azurite.connection_string("source"))
    queue = service.create_queue(name)
    for i in range(MESSAGES):
        queue.send_message(f"work {i:03d}")
    yield name
    service.delete_queue(name)


def visible(cs: str, name: str) -> int:
    return QueueServiceClient.from_connection_string(cs).get_queue_client(name).get_queue_properties() \
        .approximate_message_count


def test_a_queue_beyond_a_peek_is_reported_as_partial_with_n_of_m(rabbit_vhost, tmp_path, azurite, big_queue):
    cs, name = azurite.connection_string("source"), big_queue
    settings = worker_settings(rabbit_vhost, tmp_path, cs)
    seen: list = []
    with running(App(settings, ["functions", "catalog", tap(seen, *TYPES)])):
        with Publisher(settings.broker) as pub:
            pub.publish(backup_due("20261203T060000Z-0c1b2c3d"))
        wait_for(lambda: {"functions-backed-up", "job-failed"} <= {e.type for e in seen}, 120,
                 what="functions-backed-up and its warning")
    result = next(e for e in seen if e.type == "functions-backed-up").payload
    account = result.accounts[0]
    ours = [p for p in account.queues_partial if p.startswith(name)]
    assert result.partial and ours == [f"{name}: 32 of about {MESSAGES}"]
    assert account.messages_counted >= MESSAGES and account.messages_not_copied >= MESSAGES - 32
    warning = next(e for e in seen if e.type == "job-failed").payload
    assert warning.severity == "warning" and f"{name}: 32 of about {MESSAGES}" in warning.message
    assert "QUEUE_COPY=receive" in warning.hint
    assert visible(cs, name) == MESSAGES         # a peek changes nothing


def test_receive_copies_every_message_leaves_them_visible_and_restores_them(rabbit_vhost, tmp_path, azurite,
                                                                          big_queue):
    cs, name = azurite.connection_string("source"), big_queue
    settings = worker_settings(rabbit_vhost, tmp_path, cs, queue_copy="receive", queue_visibility_timeout=60)
    store = ArtifactStore(LocalStore(tmp_path / "direct"), certificate=None)
    s = settings.functions
    # When the account is copied with queue_copy=receive
    summary = backup_account(s, store, ArtifactStore(store.backend), s.accounts[0], "stamp1", "20261203T070000Z-0c1b")
    # Then every message is in the copy, no queue is partial, and the queue still shows all of them at once
    assert not [p for p in summary["queues_partial"] if p.startswith(name)]
    assert summary["messages"] >= MESSAGES and summary["messages_not_copied"] == 0
    assert visible(cs, name) == MESSAGES
    client = QueueServiceClient.from_connection_string(cs).get_queue_client(name)
    peeked = list(client.peek_messages(max_messages=32))
    assert {m.dequeue_count for m in peeked} == {1}      # the documented price: one dequeue each
    # And a restore into a new account brings back all of them
    empty_account(azurite.connection_string("target"))
    target = open_account("target", azurite.connection_string("target"), retries=1, timeout=30)
    try:
        report = Restorer(store, target, keys=None, containers=["none-wanted"]).run(   # queues only
            "stamp1", "20261203T070000Z-0c1b", "source")
    finally:
        target.close()
    assert report.ok, report.problems
    assert visible(azurite.connection_string("target"), name) == MESSAGES
