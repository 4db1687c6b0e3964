"""Where an event-named path may lead (workers/storage/staged.locate), on the real local file system: every
form of escape is refused before any I/O; genuine paths (also spelled with other case or separators on a
share) land inside their root. UNC cases here never connect: refusal happens first, and an accepted path only
builds the store object (connections are lazy); the foreign-host no-connection proof is in
tests/integration/test_event_roots.py."""
from __future__ import annotations

import os

import pytest

from workers.config import load_settings
from workers.storage.local import LocalStore
from workers.storage.smb import SmbStore
from workers.storage.staged import PathRefused, Root, locate


@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "stage"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "stage-evil").mkdir()
    (tmp_path / "outside.bak").write_bytes(b"x")
    os.symlink(tmp_path / "outside.bak", root / "link.bak")
    os.symlink(tmp_path, root / "dirlink")
    return root, [Root(str(root), "APPSVC_DR_STAGING__DATABASE_DIR"),
                  Root(r"\\Fs1.contoso.local\Staging\DR", "APPSVC_DR_STAGING__ROOTS")]


SETTINGS = load_settings().staging


@pytest.mark.parametrize("path", [
    "{root}/../outside.bak", "{root}/sub/../../outside.bak", "{root}", "{root}/", "{root}/.", "{root}/link.bak",
    "{root}/dirlink/outside.bak", "{tmp}/outside.bak", "{tmp}/stage-evil/x.bak", "/etc/passwd",
    "{root}\\..\\outside.bak", "relative/x.bak", "{root}/x\x00.bak", "C:\\staging\\x.bak",
    r"\\evil\Staging\DR\x.bak", r"\\fs1.contoso.local.evil\Staging\DR\x.bak", r"\\fs1.contoso.local\Other\DR\x",
    r"\\fs1.contoso.local\Staging\DR", r"\\fs1.contoso.local\Staging\DR\..\x.bak",
    r"\\fs1.contoso.local\Staging\DR-evil\x.bak", r"\\fs1.contoso.local\Staging\DR\x.bak:stream",
    r"\\fs1.contoso.local\Staging\DR\x.bak.", r"\\fs1.contoso.local\Staging\DR\..\..\..\x.bak",
    r"\\?\UNC\fs1.contoso.local\Staging\DR\x.bak", r"\\.\fs1.contoso.local\Staging\DR\x.bak",
])
def test_escapes_are_refused_naming_the_setting(roots, tmp_path, path):
    root, allowed = roots
    with pytest.raises(PathRefused) as refused:
        with locate(path.format(root=root, tmp=tmp_path), SETTINGS, allowed):
            pass
    assert "APPSVC_DR_STAGING__DATABASE_DIR" in refused.value.message + refused.value.hint


@pytest.mark.parametrize("path, key", [
    ("{root}/x.bak", "x.bak"), ("{root}/sub/../x.bak", "x.bak"), ("{root}//sub/./y.bak", "sub/y.bak"),
])
def test_local_paths_inside_the_root_open_there(roots, path, key):
    root, allowed = roots
    with locate(path.format(root=root), SETTINGS, allowed) as (backend, found):
        assert isinstance(backend, LocalStore) and backend.root == root.resolve() and found == key


@pytest.mark.parametrize("path, key", [
    (r"\\fs1.contoso.local\staging\dr\x.bak", "x.bak"),
    (r"\\FS1.CONTOSO.LOCAL\STAGING\DR\sub\..\x.bak", "x.bak"),
    ("//fs1.contoso.local/Staging/DR/sub/y.bak", "sub/y.bak"),
])
def test_unc_paths_match_the_configured_share_whatever_the_case_and_separators(roots, path, key):
    _, allowed = roots
    with locate(path, SETTINGS, allowed) as (backend, found):
        # the store connects to the configured spelling of host and share, never the event's
        assert isinstance(backend, SmbStore) and backend.host == "Fs1.contoso.local" and found == key
        # and a failure there names the staging settings, not the artifact store's
        assert backend.settings.username == "APPSVC_DR_STAGING__SMB_USERNAME"
        assert backend.settings.path == "APPSVC_DR_STAGING__ROOTS"


def test_no_configured_root_refuses_everything(tmp_path):
    with pytest.raises(PathRefused, match="no location is configured") as refused:
        with locate(str(tmp_path / "x.bak"), SETTINGS, [Root("", "APPSVC_DR_SECRETS__DROP_PATH")]):
            pass
    assert "APPSVC_DR_SECRETS__DROP_PATH" in refused.value.hint
