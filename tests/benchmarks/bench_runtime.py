"""Runtime throughput against raw pika: ``python tests/benchmarks/bench_runtime.py [--messages N]``.

Every variant runs on the same broker in its own fresh vhost. N messages are pre-loaded first (not timed),
then the clock runs from the moment the consumer is registered until all N are done:

- ``raw pika``: BlockingConnection, prefetch 400 (``--prefetch``), ack each message — the ceiling for consume + ack.
  Measured on a quorum queue (what the runtime declares) and, for reference, on a classic queue.
- ``raw pika +publish``: on the runtime's own queues (quorum, delivery limit, dead-lettering), consume a
  ping, publish it again as test-pong (persistent, mandatory, asynchronous confirms) and ack after the
  confirm, in one SelectConnection callback: the runtime's broker work with almost no Python around it.
- ``runtime cN``: App with one worker answering each Ping with a Pong (decode and validate with pydantic,
  handler, publish with confirms, ack), N job threads. The pong worker's queue is declared but not run; done
  when N jobs are done and every delivery is settled; then the ping queue must be empty and the pong queue hold N.

Timings swing widely when other work shares the machine or the broker: use ``--repeat`` (best of R rounds,
variants interleaved).
The percentage column compares msg/s with raw pika on the quorum queue. ``CPU us/msg`` is this process's CPU
time (all threads; the broker runs elsewhere) per message while the clock ran: steadier than msg/s on a busy
machine, and the part of the cost that is ours; ``broker us/msg`` is the local RabbitMQ's (beam.smp) CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pika

from contracts import Registry, default_registry
from tests.benchmarks.procs import cpu_seconds
from tests.fixtures.rabbit import mgmt, settings_for, vhost, wait_for
from tests.integration.sample_workers import Ping, PingPayload, Pong
from workers.app import App
from workers.runtime.amqp import connection_parameters, event_properties
from workers.runtime.connect import declare_topology
from workers.runtime.worker import WorkerSpec
from workers.runtime.topology import Topology

PREFETCH = 400
QUORUM = {"x-queue-type": "quorum"}


def pings(n: int) -> list[tuple[bytes, pika.BasicProperties]]:
    events = (Ping(source="bench", stamp="stamp1", correlation_id="set-1", payload=PingPayload(n=i))
              for i in range(n))
    return [(e.to_json(), event_properties(e)) for e in events]


@contextlib.contextmanager
def blocking(params: pika.ConnectionParameters):
    conn = pika.BlockingConnection(params)
    try:
        yield conn.channel()
    finally:
        conn.close()


def preload(params: pika.ConnectionParameters, exchange: str, routing_key: str, queue: str,
            messages: list[tuple[bytes, pika.BasicProperties]]) -> None:
    """Publish without confirms (fast), then wait until the broker has enqueued them all."""
    with blocking(params) as ch:
        for body, props in messages:
            ch.basic_publish(exchange, routing_key, body, props)
        wait_for(lambda: depth(ch, queue) >= len(messages), 120, 0.05, what=f"{queue} to fill")


def depth(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def raw_consume(params, n: int, messages, arguments: dict) -> float:
    with blocking(params) as ch:
        ch.queue_declare("bench.raw", durable=True, arguments=arguments)
    preload(params, "", "bench.raw", "bench.raw", messages)
    count = 0

    def on_message(ch, method, props, body) -> None:
        nonlocal count
        ch.basic_ack(method.delivery_tag)
        count += 1
        if count == n:
            ch.stop_consuming()

    with blocking(params) as ch:
        ch.basic_qos(prefetch_count=PREFETCH)
        ch.basic_consume("bench.raw", on_message)
        started = clock()
        ch.start_consuming()
        took = since(started)
        assert depth(ch, "bench.raw") == 0
    return took


def topology_with_pings(vhost_name: str, concurrency: int, messages):
    """The runtime's own queues (pinger consumes test-ping, ponger's queue takes test-pong), pings loaded."""
    settings = settings_for(vhost_name, worker={"prefetch": PREFETCH, "concurrency": concurrency},
                            metrics={"enabled": False})
    topology = Topology.from_settings(settings.broker, settings.retry)
    declare_topology(settings.broker, topology, [("pinger", ["test-ping"]), ("ponger", ["test-pong"])])
    ping_q, pong_q = topology.queues("pinger").main, topology.queues("ponger").main
    preload(connection_parameters(settings.broker), topology.exchange, "test-ping", ping_q, messages)
    return settings, topology, ping_q, pong_q


def raw_republish(vhost_name: str, n: int, messages) -> float:
    """On the runtime's queues: consume a ping, publish its body as test-pong (mandatory, asynchronous
    confirms), ack the ping after the confirm — the broker work of the runtime with almost no Python."""
    settings, topology, ping_q, pong_q = topology_with_pings(vhost_name, 1, messages)
    params = connection_parameters(settings.broker)
    state: dict = {"seq": 0, "acked": 0, "pending": {}, "started": 0.0, "seconds": 0.0, "last": 0}

    def on_message(ch, method, props, body) -> None:
        state["seq"] += 1
        state["pending"][state["seq"]] = method.delivery_tag
        ch.basic_publish(topology.exchange, "test-pong", body, props, mandatory=True)

    def on_confirm(frame) -> None:
        ch, m = state["ch"], frame.method
        seqs = range(state["last"] + 1, m.delivery_tag + 1) if m.multiple else [m.delivery_tag]
        for seq in seqs:
            tag = state["pending"].pop(seq, None)
            if tag is not None:
                ch.basic_ack(tag)
                state["acked"] += 1
        state["last"] = max(state["last"], m.delivery_tag)
        if state["acked"] == n:
            state["took"] = since(state["started"])
            conn.close()

    def on_channel(ch) -> None:
        state["ch"], state["last"] = ch, 0
        ch.confirm_delivery(on_confirm, callback=lambda _f: ch.basic_qos(
            prefetch_count=PREFETCH, callback=lambda _q: start(ch)))

    def start(ch) -> None:
        ch.basic_consume(ping_q, on_message)
        state["started"] = clock()

    conn = pika.SelectConnection(params, on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
                                 on_close_callback=lambda c, r: c.ioloop.stop())
    conn.ioloop.start()
    assert state["acked"] == n, state["acked"]
    with blocking(params) as ch:
        assert depth(ch, ping_q) == 0 and depth(ch, pong_q) == n, (depth(ch, ping_q), depth(ch, pong_q))
    return state["took"]


def runtime(vhost_name: str, n: int, concurrency: int, messages) -> float:
    settings, _, ping_q, pong_q = topology_with_pings(vhost_name, concurrency, messages)
    params = connection_parameters(settings.broker)
    registry = Registry([*default_registry().models(), Ping, Pong])

    def pinger(deps) -> WorkerSpec:
        return WorkerSpec("pinger", {Ping: lambda e, ctx: [e.follow_up(Pong, e.payload, source="bench")]},
                          concurrency=concurrency)

    app = App(settings, [pinger], registry=registry)
    runner = app.runners[0]
    thread = threading.Thread(target=app.run, kwargs={"install_signals": False}, daemon=True)
    try:
        thread.start()
        if not runner.connected.wait(30):
            raise RuntimeError("the runtime did not start consuming")
        started = clock()
        # Polled in-process (polling the broker costs it CPU): N jobs done, and no delivery left unsettled
        # (in_flight drops when the ack goes out, after every follow-up of that delivery was confirmed).
        done = {"worker": "pinger", "event_type": "test-ping", "outcome": "ok"}
        wait_for(lambda: (app.metrics.registry.get_sample_value("appsvc_dr_events_consumed_total", done) or 0) >= n
                 and runner.in_flight == 0, 600, 0.005, what="all pings handled and settled")
        took = since(started)
    finally:
        app.stop()
        thread.join(60)
    # After the stop, unacked deliveries would be back in the queue: the ping queue must stay empty.
    with blocking(params) as ch:
        assert depth(ch, ping_q) == 0 and depth(ch, pong_q) == n, (depth(ch, ping_q), depth(ch, pong_q))
    return took


def clock() -> tuple[float, float, float]:
    """Wall clock, this process's CPU (all threads) and the local broker's CPU, in seconds."""
    return time.perf_counter(), time.process_time(), cpu_seconds("beam.smp")  # 0 when the broker runs elsewhere


def since(start: tuple[float, float, float]) -> tuple[float, float, float]:
    return tuple(now - then for now, then in zip(clock(), start))  # type: ignore[return-value]


def cleanup(names: list[str]) -> None:
    """vhost() deletes its vhost but gives up silently when the broker is down (e.g. restarted by a test)."""
    left = [v["name"] for v in wait_for(_vhosts, 60, 1, what="management API")]
    for name in set(names) & set(left):
        mgmt("DELETE", f"/api/vhosts/{name}")


def _vhosts() -> list | None:
    try:
        return mgmt("GET", "/api/vhosts")  # type: ignore[return-value]
    except OSError:
        return None


def main() -> None:
    global PREFETCH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", "-n", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--prefetch", type=int, default=PREFETCH)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows each variant's best")
    parser.add_argument("--runtime-only", action="store_true", help="skip the raw pika variants (profiling)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n, PREFETCH = args.messages, args.prefetch
    messages = pings(n)
    variants = [] if args.runtime_only else [
        ("raw pika (quorum)", lambda vh, p: raw_consume(p, n, messages, QUORUM)),
        ("raw pika (classic)", lambda vh, p: raw_consume(p, n, messages, {})),
        ("raw pika +publish (quorum)", lambda vh, p: raw_republish(vh, n, messages))]
    variants += [(f"runtime c{c}", lambda vh, p, c=c: runtime(vh, n, c, messages)) for c in args.concurrency]
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    cpus: dict[str, list[float]] = {name: [] for name, _ in variants}
    brokers: dict[str, list[float]] = {name: [] for name, _ in variants}
    created: list[str] = []
    try:
        for round_ in range(args.repeat):  # rounds interleave the variants, so a busy spell hits all of them
            for name, fn in variants:
                with vhost() as vh:
                    created.append(vh)
                    seconds, cpu, beam = fn(vh, connection_parameters(settings_for(vh).broker))
                times[name].append(seconds)
                brokers[name].append(beam)
                cpus[name].append(cpu)
                print(f"  round {round_ + 1} {name}: {seconds:.2f}s ({n / seconds:.0f} msg/s, "
                      f"{cpu / n * 1e6:.0f} us CPU/msg, broker {beam / n * 1e6:.0f} us/msg)", file=sys.stderr,
                      flush=True)
    finally:
        cleanup(created)

    base = n / min(next(iter(times.values())))  # raw pika (quorum), or the first runtime row
    print(f"\nprefetch {PREFETCH}, best of {args.repeat} round(s)")
    print(f"{'variant':28s} {'messages':>9s} {'seconds':>8s} {'msg/s':>8s} {'% raw':>6s} {'CPU us/msg':>11s} {'broker us/msg':>14s}")
    for name, runs in times.items():
        rate = n / min(runs)
        cpu = min(cpus[name]) / n * 1e6
        beam = min(brokers[name]) / n * 1e6
        print(f"{name:28s} {n:9d} {min(runs):8.2f} {rate:8.0f} {100 * rate / base:5.0f}% {cpu:11.0f} {beam:14.0f}")


if __name__ == "__main__":
    main()
