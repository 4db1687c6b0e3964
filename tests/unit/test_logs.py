"""Structured logs: every line of a job carries worker, event id and backup-set id — from any logger."""
from __future__ import annotations

import io
import json
import logging
import threading

from workers.runtime.logs import configure, job_context, worker_context


def test_json_lines_carry_the_job_context_from_any_module_logger():
    stream = io.StringIO()
    configure("json", "INFO", stream)
    with worker_context("upload"), job_context("upload", "e-1", "set-9"):
        logging.getLogger("workers.storage.s3").info("put %s", "stamp1/set-9/x")
    logging.getLogger("appsvc_dr").warning("outside any job")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["worker"], first["event_id"], first["backup_set_id"]) == ("upload", "e-1", "set-9")
    assert first["msg"] == "put stamp1/set-9/x" and first["logger"] == "workers.storage.s3"
    assert (second["event_id"], second["backup_set_id"]) == ("-", "-")


def test_context_is_per_thread_so_concurrent_jobs_do_not_mix():
    stream = io.StringIO()
    configure("json", "INFO", stream)

    def job(n: int) -> None:
        with job_context("w", f"event-{n}", f"set-{n}"):
            for _ in range(50):
                logging.getLogger("t").info("job %d", n)
    threads = [threading.Thread(target=job, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for line in stream.getvalue().splitlines():
        rec = json.loads(line)
        n = rec["msg"].split()[-1]
        assert rec["event_id"] == f"event-{n}" and rec["backup_set_id"] == f"set-{n}"


def test_text_format_has_the_ids_too():
    stream = io.StringIO()
    configure("text", "INFO", stream)
    with job_context("secrets", "e-7", "set-7"):
        logging.getLogger("x").info("hello")
    assert "secrets event=e-7 set=set-7 x: hello" in stream.getvalue()
    configure("text", "WARNING")
