"""`recover plan`'s look at a PostgreSQL server before any restore: per target database, does it exist, how many
user tables does it hold, and what would stop a restore (the login may not create it; it may not replace an
existing one's objects; it may not look into it), each as a Problem with the exact fix.

Read only: the catalog, never a table of theirs."""
from __future__ import annotations

from typing import Any, Callable, ContextManager, Sequence

from workers.engines.postgres_text import USER_TABLES, quote_ident
from workers.engines.preflight import Problem, TargetState
from workers.runtime.errors import DrError


def restore_preflight(open_cursor: Callable[[str], ContextManager[Any]], server: str, maintenance_db: str,
                      databases: Sequence[str]) -> list[TargetState]:
    """One TargetState per database (names checked by the caller); ``open_cursor(database)`` opens a cursor
    there. Connection errors raise."""
    with open_cursor(maintenance_db) as cursor:
        who = cursor.execute("SELECT current_user, rolsuper::int, rolcreatedb::int FROM pg_roles "   # psqlODBC
                             "WHERE rolname = current_user").fetchone()              # gives bools as '0'/'1'
        user, superuser, createdb = str(who[0]), int(who[1]) == 1, int(who[2]) == 1
        rows = {r[0]: int(r[1]) == 1 for r in cursor.execute(
            "SELECT datname, (pg_get_userbyid(datdba) = current_user OR pg_has_role(current_user, datdba, "
            "'MEMBER'))::int FROM pg_database").fetchall()}
    out = []
    for database in databases:
        state = TargetState(database, exists=database in rows)
        if not state.exists and not (superuser or createdb):
            state.problems.append(Problem(f"login {user!r} may not create database {database!r} on "
                                          f"{server}", f"ALTER ROLE {quote_ident(user)} CREATEDB; "
                                          "(or restore as a login that may)"))
        if state.exists:
            if not (superuser or rows[database]):
                state.problems.append(Problem(f"login {user!r} does not own database {database!r}: "
                                              "pg_restore --clean cannot replace its objects",
                                              f"ALTER DATABASE {quote_ident(database)} OWNER TO "
                                              f"{quote_ident(user)}; or drop it first"))
            try:                                   # the catalog only: no table of theirs is read
                with open_cursor(database) as cursor:
                    state.tables = len(cursor.execute(USER_TABLES).fetchall())
            except DrError as exc:
                state.problems.append(Problem(f"cannot look into database {database!r}: {exc.message}",
                                              f"GRANT CONNECT ON DATABASE {quote_ident(database)} TO "
                                              f"{quote_ident(user)}; (or restore as its owner)"))
        out.append(state)
    return out
