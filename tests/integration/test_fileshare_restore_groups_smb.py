"""A restore to a real Samba share from a real (moto) S3 repository opened from settings, its large files restored
pack by pack by two processes (``workers.fileshare.restoregroups``): exact bytes and mtimes; the second process
killed half-way loses nothing (its files are restored by this one, and the temporary files its SMB session held
are removed once the server lets them go)."""
from __future__ import annotations

import logging
import re

import pytest

from tests.integration.test_fileshare_restore_procs_smb import LARGE, partials, share_dir, stored, tree  # noqa: F401
from tests.unit.test_fileshare_restoregroups import killing
from tests.unit.test_fileshare_trees import picture
from workers.artifacts.service import ArtifactStore
from workers.fileshare.restore import Restorer
from workers.repository.repo import Repository
from workers.storage.settings import EncryptionSettings, StoreSettings

pytestmark = pytest.mark.integration


def from_settings(repo: Repository, s3_server, tmp_path) -> Repository:
    """The same bucket opened as the CLI and the workers open it: from settings, so another process can too."""
    store = ArtifactStore.from_settings(
        StoreSettings(kind="s3", s3_endpoint=s3_server.endpoint, s3_access_key=s3_server.access_key,
                      s3_secret_key=s3_server.secret_key, s3_bucket=repo.data.backend.bucket,
                      s3_region=s3_server.region, s3_secure=False),
        EncryptionSettings(certificate=tmp_path / "cert.pem"))
    return Repository(store, repo.stamp)


def restore(smb_server, repo, keys, manifest, unc, tmp_path, **kw):
    return Restorer(repo, tree(smb_server, unc), keys=keys, writers=0, groups=2, groups_from=0, retries=0,
                    temp_root=tmp_path / "t", **kw).run(manifest)


def test_large_files_restored_by_two_processes_to_the_share_are_exact(smb_server, s3_server, stored, tmp_path,
                                                                      caplog):
    # Given a snapshot with 5 large files in an S3 store opened from settings, and an empty folder of the share
    repo, keys, manifest, src = stored
    repo = from_settings(repo, s3_server, tmp_path)
    target, unc = share_dir(smb_server)
    caplog.set_level(logging.INFO, logger="workers")
    # When it is restored with 2 processes for the large files
    report = restore(smb_server, repo, keys, manifest, unc, tmp_path)
    # Then every file and directory is there with its bytes and mtime, and nothing else
    assert report.exact and picture(target) == picture(src) and partials(target) == []
    # And the second process, with its own S3 and SMB connections, restored its share of the large files
    assert f"{len(LARGE)} large file(s) in 2 process(es)" in caplog.text
    own = [int(n) for n in re.findall(r"a process of its own restored (\d+) of its", caplog.text)]
    assert len(own) == 1 and own[0] > 0


def test_the_second_process_killed_half_way_over_smb_loses_nothing(smb_server, s3_server, stored, tmp_path, caplog):
    # Given the same restore, whose second process is killed once it has written its first bytes to the share
    repo, keys, manifest, src = stored
    repo = from_settings(repo, s3_server, tmp_path)
    target, unc = share_dir(smb_server)
    caplog.set_level(logging.INFO, logger="workers")
    killed: list[int] = []
    report = restore(smb_server, repo, keys, manifest, unc, tmp_path, progress=killing(killed))
    # Then it was killed half-way, and said so
    assert killed and "its process ended before it finished" in caplog.text
    # And every file is exact, restored by this process, with no temporary file left on the share
    assert report.exact and picture(target) == picture(src) and partials(target) == []
