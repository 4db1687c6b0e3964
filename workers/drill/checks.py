"""The drill of each component, built on the restore commands' own code and aimed at scratch targets only:

* secrets — decrypt the set's SystemSecrets.json version, check its fingerprint and that it is a non-empty
  JSON object. Its content is never printed, logged or recorded.
* databases — see :mod:`workers.drill.databases` (a scratch restore, a consistency pass, then dropped).
* fileshare — restore the set's snapshot into a scratch directory (every file's SHA-256 verified as it is
  written), then remove it.
"""
from __future__ import annotations

import io
import json
import shutil

from workers.drill.base import Drill, timed
from workers.drill.databases import databases, scratch_name
from workers.drill.results import ComponentResult
from workers.fileshare.localtree import LocalTree
from workers.fileshare.restore import Restorer
from workers.repository.repo import Repository
from workers.repository.snapshots import load_manifest, snapshot_of_set
from workers.runtime.errors import PermanentError
from workers.secrets.versions import set_reference

__all__ = ["CHECKS", "Drill", "databases", "fileshare", "functions", "scratch_name", "secrets", "timed"]

# ------------------------------------------------------------------------------------------------ secrets
def secrets(d: Drill) -> list[ComponentResult]:
    def check(r: ComponentResult) -> None:
        ref = set_reference(d.store, d.stamp, d.set_id, d.keys)
        r.what = f"SystemSecrets.json {ref.get('version_id', '?')}"
        plain = io.BytesIO()
        record = d.store.get(ref["key"], plain, keys=d.keys)       # decrypts; raises unless every hash matches
        r.bytes = record.plaintext_size
        if record.plaintext_sha256 != ref.get("fingerprint"):
            raise PermanentError(f"the set names secrets fingerprint {str(ref.get('fingerprint'))[:12]}, the "
                                 f"stored version holds {record.plaintext_sha256[:12]}",
                                 hint="The set's secrets reference or the version was altered: restore the "
                                      "secrets of another set (`appsvc-dr secrets list`).")
        try:
            data = json.loads(plain.getvalue())
        except ValueError:
            data = None                    # the decoder's message may quote content: never pass it on
        finally:
            plain.seek(0)
            plain.truncate()
        if not isinstance(data, dict) or not data:
            raise PermanentError("the decrypted SystemSecrets.json is not a non-empty JSON object",
                                 hint="Restore-AppServiceStamp cannot use it: export the secrets again from the "
                                      "Azure Stack Hub administrator portal and publish them "
                                      "(`appsvc-dr publish secrets-rotated --file ...`).")
        r.detail = (f"decrypted, fingerprint {record.plaintext_sha256[:12]} verified, a JSON object with "
                    f"{len(data)} keys (content not shown)")
    return [timed("secrets", "SystemSecrets.json", check)]


# ---------------------------------------------------------------------------------------------- fileshare
def fileshare(d: Drill) -> list[ComponentResult]:
    def check(r: ComponentResult) -> None:
        repo = Repository(d.store, d.stamp)              # no cache: everything is read from the store
        snapshot = snapshot_of_set(repo, d.set_id)
        r.what = f"snapshot {snapshot}"
        manifest = load_manifest(repo, snapshot, d.keys)
        target_dir = d.scratch / f"fileshare-{d.drill_id}"
        target = LocalTree(target_dir, create=True)
        try:
            report = Restorer(repo, target, keys=d.keys, transfers=d.settings.fileshare.transfers).run(manifest)
        finally:
            target.close()
            if not d.keep:
                shutil.rmtree(target_dir, ignore_errors=True)
        files = [e for e in manifest.entries if not e.is_dir]
        if report.files_restored != len(files) or report.bytes_written != sum(e.size for e in files):
            raise PermanentError(f"restored {report.files_restored} of {len(files)} files "
                                 f"({report.bytes_written} bytes)", hint="Run the drill again with --keep and "
                                 "compare the scratch directory with `appsvc-dr snapshots diff`.")
        r.bytes = report.bytes_written
        partial = f"; partial snapshot: {len(manifest.skipped)} file(s) were in use" if manifest.partial else ""
        where = f"kept in {target_dir}" if d.keep else "scratch directory removed"
        r.detail = (f"{len(files)} files, {report.dirs} directories restored, every SHA-256 verified; "
                    f"{where}{partial}")
    return [timed("fileshare", "snapshot", check)]


def functions(d: Drill) -> list[ComponentResult]:
    """Each storage account copy of the set: every blob read from its pack and its SHA-256 checked, counts
    compared with the manifest (no storage account is written: a restore needs a new one)."""
    from workers.artifacts.setmanifest import read_set
    from workers.functions.verify import verify_copy   # the Azure SDKs: loaded only when drilling this

    accounts = sorted(a.key.rsplit("/", 1)[1].removesuffix(".jsonl") for a in read_set(d.store, d.stamp, d.set_id)
                      .artifacts if a.key.split("/")[2] == "functions")
    results = []
    for account in accounts:
        def check(r: ComponentResult, account: str = account) -> None:
            report = verify_copy(d.store, d.keys, d.stamp, d.set_id, account)
            r.bytes = report.bytes
            r.detail = (f"{report.blobs} blobs (every SHA-256 verified), {report.messages} queue messages, "
                        f"{report.entities} table entities")
        results.append(timed("functions", f"account {account}", check))
    return results


CHECKS = {"secrets": secrets, "databases": databases, "fileshare": fileshare, "functions": functions}
