"""How PostgreSQL text is written and read here: quoted identifiers, libpq conninfo values, the catalog query
for user tables, and the table of contents ``pg_restore --list`` prints."""
from __future__ import annotations

import re

USER_TABLES = (  # user tables and their sizes, from the catalog
    "SELECT n.nspname, c.relname, c.relkind, pg_relation_size(c.oid) + COALESCE(pg_relation_size("
    "NULLIF(c.reltoastrelid, 0)), 0) AS bytes FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ORDER BY 1, 2")
_TOC_ENTRY = re.compile(r"^\d+; \d+ \d+ (TABLE DATA|TABLE) ")


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier in double quotes, ``"`` doubled."""
    return '"' + name.replace('"', '""') + '"'


def conninfo_value(value: str) -> str:
    """A libpq conninfo value in single quotes (``\\`` and ``'`` backslash-escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_listing(text: str) -> tuple[list[str], str | None]:
    """The kinds of an archive's TOC entries ("TABLE", "TABLE DATA", ... other entries as "") and the name of the
    database it was dumped from (its header's ``dbname:``), from ``pg_restore --list``'s output."""
    lines = text.splitlines()
    held = next((line.split(":", 1)[1].strip() for line in lines if line.startswith(";") and
                 line[1:].strip().startswith("dbname:")), None)
    return [(m.group(1) if (m := _TOC_ENTRY.match(line)) else "") for line in lines
            if line and not line.startswith(";")], held
