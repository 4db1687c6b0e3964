"""One SMB session per store or tree, in a connection cache of its own (so closing one never drops another's
connection), through smbclient's public API. Every call passes the port explicitly (``DirEntry.stat()`` would
forget it and dial 445): pass :attr:`Session.kw` to every ``smbclient`` call."""
from __future__ import annotations

from typing import Any

import smbclient

from workers.smb.unc import Unc


def reveal(value: Any) -> str | None:
    """The plain text of a password given as a pydantic ``SecretStr`` or a plain string (or None)."""
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


class Session:
    """The credentials, port, encryption and connection cache of one store or tree."""

    def __init__(self, unc: Unc, *, username: str | None = None, password: Any = None, port: int = 445,
                 encrypt: bool = True, timeout: float = 30.0) -> None:
        self.unc, self.port = unc, port
        self.cache: dict[str, Any] = {}
        self.kw: dict[str, Any] = dict(username=username, password=reveal(password), port=port, encrypt=encrypt,
                                       connection_timeout=timeout, connection_cache=self.cache)

    def register(self) -> None:
        """Connect and log on (NTLM/Kerberos); errors are smbprotocol's, for :func:`workers.smb.status.classify`."""
        smbclient.register_session(self.unc.host, **self.kw)

    def close(self) -> None:
        """Log off and close every connection of this session's cache (idempotent; errors while closing a dead
        connection are ignored)."""
        smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self.cache)

    @property
    def open_connections(self) -> int:
        """How many connections this session holds open now (0 after :meth:`close`)."""
        return len(self.cache)
