"""PostgreSQL's answer to DBCC CHECKDB for a restored (scratch) database.

With the ``amcheck`` extension available (contrib; ``CREATE EXTENSION`` needs a superuser): ``bt_index_check``
with ``heapallindexed`` on every valid B-tree index (each index's structure, and every heap tuple present in
it) and ``verify_heapam`` on every table and its TOAST data (amcheck 1.3, PostgreSQL 14+). Without it (or with
``pg_amcheck = false``): a full read of every table, ``pg_dump --data-only`` streamed to the null device, which
fails on a page it cannot read. https://www.postgresql.org/docs/current/amcheck.html
"""
from __future__ import annotations

import logging
import os
from typing import Any

import pyodbc

from workers.engines.odbc import clean_text, error_parts
from workers.runtime.errors import DrError, PermanentError

log = logging.getLogger(__name__)

_HINT = ("The restored copy is damaged: the backup holds a damaged database. Check the source (amcheck, or a "
         "full pg_dump), repair it, and take a new backup; drill an older set meanwhile.")
_INDEXES = ("SELECT c.oid, n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't' "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
            "ORDER BY 2, 3")
_TABLES = ("SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
           "WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' "
           "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_t%' ORDER BY 2, 3")


def _amcheck(cursor: Any) -> bool:
    """Create amcheck in the scratch database if the server has it; False when it cannot."""
    if not cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'").fetchall():
        return False
    try:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    except pyodbc.Error as exc:
        log.info("amcheck is available but cannot be created (%s): reading every table instead",
                 clean_text(error_parts(exc)[1])[:200])
        return False
    return True


def with_amcheck(cursor: Any, database: str) -> str:
    """bt_index_check + verify_heapam over the whole database; raises on the first damage found."""
    indexes = cursor.execute(_INDEXES).fetchall()
    for oid, schema, name in indexes:
        try:
            cursor.execute(f"SELECT bt_index_check({int(oid)}::regclass, true)").fetchall()
        except pyodbc.Error as exc:
            raise PermanentError(f"amcheck: checking index {schema}.{name} of {database!r} found damage: "
                                 f"{clean_text(error_parts(exc)[1])[:500]}", hint=_HINT) from None
    heap = bool(cursor.execute("SELECT 1 FROM pg_proc WHERE proname = 'verify_heapam'").fetchall())
    tables = cursor.execute(_TABLES).fetchall() if heap else []
    for oid, schema, name in tables:
        try:
            found = cursor.execute(f"SELECT blkno, offnum, msg FROM verify_heapam({int(oid)}::regclass, "
                                   "check_toast => true) LIMIT 5").fetchall()
        except pyodbc.Error as exc:
            raise PermanentError(f"amcheck: table {schema}.{name} of {database!r} cannot be read: "
                                 f"{clean_text(error_parts(exc)[1])[:500]}", hint=_HINT) from None
        if found:
            shown = "; ".join(f"block {r[0]} item {r[1]}: {r[2]}" for r in found)
            raise PermanentError(f"amcheck: table {schema}.{name} of {database!r} is damaged: {shown}", hint=_HINT)
    checked = f" and {len(tables)} tables (verify_heapam)" if heap else ""
    return f"amcheck: {len(indexes)} B-tree indexes (bt_index_check, heapallindexed){checked} consistent"


def full_read(engine: Any, database: str) -> str:
    """Every table read to the end (pg_dump --data-only to the null device): a page it cannot read fails."""
    argv = [engine.settings.pg_dump, "--data-only", "--format=plain", f"--file={os.devnull}"]
    try:
        engine._run(argv, database, None, action=f"full read of every table of {database!r}", setting="PG_DUMP")
    except DrError as exc:
        raise PermanentError(f"consistency pass: {exc.message}", hint=_HINT) from exc
    return "every table read in full (pg_dump --data-only; amcheck not used)"


def check_consistency(engine: Any, database: str) -> str:
    """amcheck where it can run, else a full read of every table; says which ran."""
    if engine.settings.pg_amcheck:
        with engine._cursor(database) as cursor:      # the engine's own helpers (same package)
            if _amcheck(cursor):
                return with_amcheck(cursor, database)
    return full_read(engine, database)
