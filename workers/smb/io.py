"""The one place that imports smbclient's private module ``smbclient._io``.

smbclient's public API has no equivalent for what these give us: ``SMBRawIO`` + ``SMBFileTransaction`` send
several requests as ONE compound (CREATE + READ + CLOSE for a small file, CREATE + WRITE + SET_INFO + CLOSE
for a restored one), ``SMBDirectoryIO`` issues raw QUERY_DIRECTORY requests we parse ourselves, and
``set_info`` renames a file on its own handle (``smbclient.replace`` opens the destination for execute,
which Samba refuses on a file without the x bit). Because the module is private, smbprotocol is pinned to
the tested minor version in pyproject.toml: rerun the SMB tests before widening that pin.
"""
from smbclient._io import SMBDirectoryIO, SMBFileTransaction, SMBRawIO, set_info

__all__ = ["SMBDirectoryIO", "SMBFileTransaction", "SMBRawIO", "set_info"]
