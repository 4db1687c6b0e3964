"""Several simulated instances reachable by name, and availability-group listeners that lead to the primary.

``Network({...}).connect`` replaces ``pyodbc.connect`` when a test needs more than one server: the
connection string's SERVER (``tcp:host,port``, ``host\\instance`` or FreeTDS ``SERVER=host;PORT=``) picks
the instance; a listener name reaches the AG's current primary, as a listener does
(https://learn.microsoft.com/en-us/sql/database-engine/availability-groups/windows/listeners-client-connectivity-application-failover).
An unknown host is the driver's 08001 "server was not found".
"""
from __future__ import annotations

from typing import Any

from tests.sqlsim.driver import Connection, Simulator, parse_connection_string
from tests.sqlsim.errors import driver_error


def host_of(connection_string: str) -> str:
    server = parse_connection_string(connection_string).get("SERVER", "")
    server = server.split(":", 1)[1] if server.lower().startswith("tcp:") else server
    return server.split(",")[0].split("\\")[0].lower()


class Network:
    def __init__(self, instances: dict[str, Simulator]) -> None:
        self.instances = {name.lower(): sim for name, sim in instances.items()}
        self.reached: list[str] = []            # which instance each connection went to

    def _listeners(self) -> dict[str, str]:
        found = {}
        for sim in self.instances.values():
            ag = sim.server.ag
            if ag is not None and ag.listener and ag.primary():
                found[ag.listener.lower()] = ag.primary().lower()
        return found

    def connect(self, connection_string: str, **kwargs: Any) -> Connection:
        host = host_of(connection_string)
        host = self._listeners().get(host, host)
        if host not in self.instances:
            raise driver_error("08001", "TCP Provider: No such host is known.", "SQLDriverConnect")
        self.reached.append(host)
        return self.instances[host].connect(connection_string, **kwargs)
