"""Striped database backups in a backup set: one artifact per stripe, named ``<name>.<i>of<N>``.

A SQL Server backup written to N files (``DATABASE__STRIPES``) is N media families that RESTORE needs all
together. Each stripe is stored as its own artifact (``appservice_hosting.bak.1of3`` ... ``.3of3``): the upload
worker, records, manifests and retention handle them like any artifact, and the names say how many stripes
make the backup, so completeness and restore never depend on the reader's local ``stripes`` setting.

* :func:`database_count` counts a database once it is whole: unstriped, or with every stripe ``1..N`` of one
  ``N`` stored (the catalog's ``expected = {"databases": <configured databases>}`` stays per database);
* :func:`database_of` maps an artifact name to its database (``x.bak.2of3`` → ``x``);
* :func:`stripe_keys` lists the keys a restore needs, in stripe order, or refuses an incomplete backup.
"""
from __future__ import annotations

import re
from typing import Iterable

from workers.runtime.errors import PermanentError

_STRIPE = re.compile(r"^(?P<base>.+)\.(?P<index>[1-9][0-9]{0,2})of(?P<count>[1-9][0-9]{0,2})$")


def stripe_name(name: str, index: int, count: int) -> str:
    """``appservice_hosting.bak`` → ``appservice_hosting.bak.2of3``; the name itself when ``count`` is 1."""
    return name if count <= 1 else f"{name}.{index}of{count}"


def parse(name: str) -> tuple[str, int, int]:
    """(base name, stripe index, stripe count): ``x.bak.2of3`` → (``x.bak``, 2, 3); ``x.bak`` → (``x.bak``, 1, 1)."""
    found = _STRIPE.match(name)
    if found is None or int(found["index"]) > int(found["count"]):
        return name, 1, 1
    return found["base"], int(found["index"]), int(found["count"])


def database_of(name: str) -> str:
    """The database an artifact of the databases component belongs to: ``x.bak`` / ``x.dump`` / ``x.bak.1of3``."""
    return parse(name)[0].rsplit(".", 1)[0]


def _families(names: Iterable[str]) -> dict[str, dict[int, set[int]]]:
    """base name → stripe count → indexes present."""
    found: dict[str, dict[int, set[int]]] = {}
    for name in names:
        base, index, count = parse(name)
        found.setdefault(base, {}).setdefault(count, set()).add(index)
    return found


def is_whole(counts: dict[int, set[int]]) -> bool:
    return any(indexes >= set(range(1, count + 1)) for count, indexes in counts.items())


def database_count(names: Iterable[str]) -> int:
    """How many whole database backups the artifact names make (a striped one counts once all stripes are in)."""
    return sum(1 for counts in _families(names).values() if is_whole(counts))


def stripe_keys(keys: Iterable[str], base_key: str) -> list[str]:
    """The stored keys of the backup ``base_key`` (``<stamp>/<set>/databases/x.bak``) in stripe order: the key
    itself when unstriped, else every ``.<i>of<N>`` of it. PermanentError when a stripe is missing."""
    prefix = base_key.rsplit("/", 1)[0] + "/"
    names = [k[len(prefix):] for k in keys if k.startswith(prefix)]
    base = base_key[len(prefix):]
    counts = _families(names).get(base, {})
    if 1 in counts and len(counts) == 1:
        return [base_key]
    whole = sorted(count for count, indexes in counts.items() if count > 1 and indexes >= set(range(1, count + 1)))
    if whole:
        return [prefix + stripe_name(base, i, whole[0]) for i in range(1, whole[0] + 1)]
    if not counts:
        raise PermanentError(f"the backup set holds no artifact {base_key}",
                             hint="Check the stamp, set and database (`appsvc-dr artifacts list --set <set>`).")
    have = ", ".join(sorted(n for n in names if parse(n)[0] == base))
    raise PermanentError(f"the striped backup {base_key} is incomplete: only {have} are stored",
                         hint="Every stripe is needed to restore; restore an older complete set, or re-run the "
                              "backup (`appsvc-dr publish database-backup-requested`) for this set.")
