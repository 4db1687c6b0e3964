"""The consumer: one asynchronous connection, jobs on worker threads, publish-with-confirms, then ack.

pika's public API only (pika ``examples/basic_consumer_threaded.py``): a ``SelectConnection`` whose I/O loop
runs on the thread that calls :meth:`Runner.run`; deliveries go through a queue to ``concurrency`` job
threads, so heartbeats keep flowing during hour-long backups. A finished job hands its outcome back with
``add_callback_threadsafe`` (:mod:`workers.runtime.handback`); the loop publishes every outgoing message
(persistent, mandatory, confirmed — confirms arrive asynchronously and in batches) and acks the delivery only
when all are confirmed (:mod:`workers.runtime.acks`). A lost connection is re-opened with backoff and the
topology re-declared; unacked deliveries are redelivered by the broker, so nothing is lost.
"""
from __future__ import annotations

import functools
import logging
import queue
import threading
import time

import pika
from pika.adapters.select_connection import IOLoop

from contracts import Registry
from workers.middleware.base import Hooks
from workers.runtime.acks import Acks
from workers.runtime.amqp import connection_parameters
from workers.runtime.confirms import Confirms, Pending
from workers.runtime.connect import declare_topology
from workers.runtime.errors import ConfigurationError, DrError
from workers.runtime.handback import HandBack
from workers.runtime.settings import BrokerSettings, RetrySettings, WorkerSettings
from workers.runtime.worker import WorkerSpec
from workers.runtime.logs import worker_context
from workers.runtime.processing import Delivery, JobProcessor, Outcome
from workers.runtime.timer import Ticker
from workers.runtime.topology import Topology

log = logging.getLogger("appsvc_dr.runner")
_STOP = None  # tells a job thread to exit


class Runner:
    def __init__(self, spec: WorkerSpec, registry: Registry, *, broker: BrokerSettings, retry: RetrySettings,
                 worker: WorkerSettings, all_workers: list[tuple[str, list[str]]] | None = None,
                 hooks: Hooks | None = None) -> None:
        self.spec, self.broker, self.grace_period, self.hooks = spec, broker, worker.grace_period, hooks or Hooks()
        self.topology = Topology.from_settings(broker, retry)
        self.queue = self.topology.queues(spec.name).main
        self.all_workers = all_workers or [(spec.name, spec.event_types)]
        self.processor = JobProcessor(spec, registry, self.topology, retry.crash_limit, self.hooks)
        self.concurrency = worker.concurrency or spec.concurrency
        self.prefetch = max(worker.prefetch or spec.prefetch or self.concurrency, self.concurrency)
        self.connected = threading.Event()
        self.disconnects = 0  # connections closed or lost so far; their unacked deliveries are redelivered
        self._ioloop = IOLoop()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._handback = HandBack(self._ioloop, self._finish)
        self._cancel = threading.Event()
        self._conn: pika.SelectConnection | None = None
        self._ch = self._consumer_tag = None
        self._confirms = Confirms()
        self._stopping = False
        self._deadline = 0.0
        self._in_flight = 0
        self._acks = Acks(self._ioloop, lambda: self._ch)
        self._fatal: BaseException | None = None
        self._delay = 0.5
        self._ever_connected = False

    @property
    def in_flight(self) -> int:
        """Deliveries received and not yet acked or requeued (jobs running, or follow-ups awaiting confirms)."""
        return self._in_flight

    # ---- lifecycle -------------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until :meth:`stop`. Raises ConfigurationError when the broker refuses us at start."""
        with worker_context(self.spec.name):
            self.hooks.on_boot(self.spec.name)
            if self.spec.on_start:
                self.spec.on_start()
            threads = [threading.Thread(target=self._work, name=f"{self.spec.name}-job-{i}", daemon=True)
                       for i in range(self.concurrency)]
            for t in threads:
                t.start()
            ticker = Ticker(self.spec, self.broker, self.hooks) if self.spec.on_timer else None
            if ticker:
                ticker.start()
            self._ioloop.add_callback_threadsafe(self._connect)
            self._ioloop.start()
            if ticker:
                ticker.stop()
            for _ in threads:  # idle threads exit; deliveries still queued are unacked: the broker has them
                self._jobs.put(_STOP)
            self.hooks.on_shutdown(self.spec.name)
            if self.spec.on_shutdown:
                self.spec.on_shutdown()
            if self._fatal:
                raise self._fatal

    def stop(self) -> None:
        """Graceful stop, callable from any thread (e.g. a signal handler)."""
        self._ioloop.add_callback_threadsafe(self._begin_stop)

    # ---- connection ------------------------------------------------------------------------------
    def _connect(self) -> None:
        if self._stopping:
            self._ioloop.stop()
            return
        try:
            declare_topology(self.broker, self.topology, self.all_workers)
        except ConfigurationError as exc:
            if not self._ever_connected:
                self._fatal = exc
                self._ioloop.stop()
                return
            log.error("%s (how to fix: %s); retrying", exc.message, exc.hint)
            return self._schedule_reconnect()
        except DrError as exc:
            log.warning("%s; retrying in %.1fs", exc.message, self._delay)
            return self._schedule_reconnect()
        self._conn = pika.SelectConnection(
            connection_parameters(self.broker), on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error, on_close_callback=self._on_closed,
            custom_ioloop=self._ioloop)

    def _schedule_reconnect(self) -> None:
        self._ioloop.call_later(self._delay, self._connect)
        self._delay = min(self._delay * 2, 30.0)

    def _on_open(self, conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, conn, err) -> None:
        log.warning("cannot connect to RabbitMQ (%s); retrying in %.1fs", err, self._delay)
        self._conn = None
        self._schedule_reconnect()

    def _on_channel(self, ch) -> None:
        self._ch = ch
        self._confirms.reset()
        ch.add_on_close_callback(self._on_channel_closed)
        ch.add_on_return_callback(self._on_return)
        ch.confirm_delivery(self._on_confirm,
                            callback=lambda _f: ch.basic_qos(prefetch_count=self.prefetch,
                                                             callback=lambda _q: self._consume()))

    def _consume(self) -> None:
        if self._stopping or self._ch is None:
            return
        self._consumer_tag = self._ch.basic_consume(self.queue, self._on_message)
        self._ever_connected, self._delay = True, 0.5
        self.connected.set()
        self.hooks.on_connection(self.spec.name, True)
        log.info("consuming %s (prefetch %d, concurrency %d)", self.queue, self.prefetch, self.concurrency)

    def _on_channel_closed(self, ch, reason) -> None:
        self._ch = None
        if self._conn is not None and self._conn.is_open:
            log.warning("channel closed (%s); reopening the connection", reason)
            self._conn.close()

    def _on_closed(self, conn, reason) -> None:
        self._ch = self._conn = None
        self.connected.clear()
        self.hooks.on_connection(self.spec.name, False)
        self.disconnects += 1
        self._in_flight -= self._confirms.reset()
        self._acks.clear()
        if self._stopping:
            log.info("connection closed; stopped")
            self._ioloop.stop()
            return
        log.warning("connection lost (%s); reconnecting in %.1fs — unacked deliveries will be redelivered",
                    reason, self._delay)
        self._schedule_reconnect()

    # ---- jobs ------------------------------------------------------------------------------------
    def _on_message(self, ch, method, props, body) -> None:
        self._in_flight += 1
        self._acks.received(method.delivery_tag)
        delivery = Delivery(body, method.routing_key, method.exchange, props)
        self._jobs.put((self.disconnects, method.delivery_tag, delivery))

    def _work(self) -> None:
        with worker_context(self.spec.name):
            while (item := self._jobs.get()) is not _STOP:
                connection, tag, delivery = item
                if connection != self.disconnects or self._stopping:
                    self._ioloop.add_callback_threadsafe(functools.partial(self._skip, connection, tag))
                    continue
                try:
                    outcome = self.processor.process(delivery, self._cancel)
                except Exception:  # noqa: BLE001 - the processor turns failures into outcomes; belt and braces
                    log.exception("processing crashed; the message is requeued")
                    outcome = None
                self._handback.put((connection, tag, outcome, delivery))

    def _skip(self, connection: int, tag: int) -> None:
        self._in_flight -= 1
        if connection == self.disconnects and self._ch is not None:
            self._requeue(tag)

    def _finish(self, connection: int, tag: int, outcome: Outcome | None, delivery: Delivery) -> None:
        if connection != self.disconnects or self._ch is None:
            self._in_flight -= 1
            log.info("connection was lost before this job finished; the broker redelivers it")
            return
        if outcome is None:
            self._in_flight -= 1
            self._requeue(tag)
            return
        pending = Pending(tag, outcome, delivery)
        if not outcome.messages:
            return self._settle(pending)
        self._publish(pending, outcome.messages)

    # ---- publish, confirm, ack -------------------------------------------------------------------
    def _publish(self, pending: Pending, messages) -> None:
        for msg in messages:
            self._ch.basic_publish(msg.exchange, msg.routing_key, msg.body, msg.properties, mandatory=True)
            self._confirms.published(pending, msg)
            if msg.kind in ("event", "job-failed"):
                self.hooks.on_published(self.spec.name, msg.event_type)

    def _on_return(self, ch, method, props, body) -> None:
        pending = self._confirms.returned(props.message_id or "", method.routing_key)
        log.error("message %s (%s) was unroutable: no queue is bound for it", props.type, method.routing_key)
        if pending is None:
            return
        if method.exchange == "":      # a retry or dead-letter copy sent straight to a queue that is gone
            pending.copy_lost = True
        else:
            pending.returned.append(props.type or method.routing_key)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        nack = isinstance(method, pika.spec.Basic.Nack)
        for pending in self._confirms.confirmed(method.delivery_tag, method.multiple, nack):
            self._settle(pending)

    def _settle(self, p: Pending) -> None:
        if self._ch is None:
            return
        if p.nacked or p.copy_lost:
            log.warning("broker refused a message or a retry/dead-letter queue is missing (re-declared on the "
                        "next connection); the delivery is requeued")
            self._requeue(p.tag)
            if p.copy_lost and self._conn is not None and self._conn.is_open:
                self._conn.close()  # reconnecting re-declares the topology, so the next attempt finds its queue
        elif p.returned and not p.escalated and p.outcome.kind == "ok":
            p.escalated = True
            missing = ", ".join(sorted(set(p.returned)))
            error = ("UnroutableFollowUp", f"follow-up event(s) {missing} had no queue bound",
                     "Start or declare the worker that consumes these events (`appsvc-dr topology declare`), "
                     f"then `appsvc-dr dlq replay {self.spec.name}`.")
            dead = self.processor.dead_letter(p.delivery, None, None, 0, reason="unroutable", error=error)
            p.returned.clear()
            return self._publish(p, dead.messages)
        else:
            self._acks.ack(p.tag)
        self._in_flight -= 1

    def _requeue(self, tag: int) -> None:
        self._acks.forget(tag)
        self._ch.basic_nack(tag, requeue=True)

    # ---- shutdown --------------------------------------------------------------------------------
    def _begin_stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._deadline = time.monotonic() + self.grace_period
        log.info("stopping: no new jobs; %d in flight, grace period %gs", self._in_flight,
                 self.grace_period)
        if self._ch is not None and self._consumer_tag:
            self._ch.basic_cancel(self._consumer_tag)
        self._check_stop()

    def _check_stop(self) -> None:
        late = time.monotonic() >= self._deadline
        if self._in_flight > 0 and not late:
            self._ioloop.call_later(0.1, self._check_stop)
            return
        if self._in_flight > 0:
            log.warning("grace period over with %d job(s) unfinished; closing — the broker requeues them",
                        self._in_flight)
            self._cancel.set()
        self._acks.flush()
        if self._conn is not None and self._conn.is_open:
            self._conn.close()
        elif self._conn is None or self._conn.is_closed:
            self._ioloop.stop()
