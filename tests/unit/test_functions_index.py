"""The previous Function Apps index is read from the store: a malformed entry (a location outside the account's
packs, a negative offset, a hash that is not one) is dropped, so that blob is read from the account again instead
of the next manifest pointing at content the index made up."""
from __future__ import annotations

import logging

from workers.artifacts.service import ArtifactStore
from workers.functions.layout import account_prefix, checked_index, latest_index, put_json
from workers.storage.local import LocalStore

PACKS = f"{account_prefix('s1', 'acct')}/packs/"
SHA = "a" * 64
GOOD = ["etag-1", PACKS + "0" * 32, 0, 10, SHA]


def test_only_well_formed_entries_inside_the_accounts_packs_are_kept(caplog):
    index = {"b" * 64: GOOD,
             "c" * 64: ["etag", "s1/secrets/20261203T000000Z.json", 0, 10, SHA],        # outside the packs
             "d" * 64: ["etag", PACKS.replace("/acct/", "/other/") + "0" * 32, 0, 10, SHA],   # another account
             "e" * 64: ["etag", PACKS + "0" * 32, -1, 10, SHA],                         # negative offset
             "f" * 64: ["etag", PACKS + "0" * 32, 0, "10", SHA],                        # not a number
             "0" * 64: ["etag", PACKS + "0" * 32, 0, 10, "not-a-hash"],
             "../x": GOOD,                                                               # not a blob id
             "1" * 64: GOOD[:4]}
    with caplog.at_level(logging.WARNING):
        assert checked_index(index, PACKS) == {"b" * 64: GOOD}
    assert "7 malformed" in caplog.text


def test_the_newest_earlier_index_is_read_and_checked(tmp_path):
    meta = ArtifactStore(LocalStore(tmp_path))
    base = f"{account_prefix('s1', 'acct')}/index/"
    put_json(meta, base + "20261201T000000Z-a.json", {"format": 1, "blobs": {"b" * 64: GOOD}})
    put_json(meta, base + "20261202T000000Z-b.json", {"format": 1, "blobs": {"c" * 64: GOOD,
                                                                             "d" * 64: [1, 2, 3, 4, 5]}})
    put_json(meta, base + "20261203T000000Z-c.json", {"format": 1, "blobs": "not a mapping"})
    assert latest_index(meta, "s1", "acct", before="20261203T000000Z-c") == {"c" * 64: GOOD}
    # A newest index that is not an index at all is passed over for the one before it
    assert latest_index(meta, "s1", "acct", before="20261204T000000Z-d") == {"c" * 64: GOOD}
    assert latest_index(meta, "s1", "acct", before="20261202T000000Z-b") == {"b" * 64: GOOD}
