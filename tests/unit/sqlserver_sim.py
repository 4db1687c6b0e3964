"""Shared set-up for the SQL Server engine tests: a simulated instance and an engine connected to it."""
from __future__ import annotations

from pathlib import Path

from tests.sqlsim import PASSWORD, Server, Simulator, app_service_server
from tests.sqlsim.media import read_media
from workers.engines import DatabaseSettings, SqlServerEngine

DB = "appservice_hosting"
STAGE = r"\\fileserver\staging\stamp1\appservice_hosting.bak"
SECRET = PASSWORD


def make(tmp_path: Path, server: Server | None = None, **settings: object) -> tuple[SqlServerEngine, Simulator]:
    sim = Simulator(server or app_service_server(tmp_path / "sql01"))
    values: dict[str, object] = dict(server="sql01", username="backup", password=SECRET)
    values.update(settings)
    return SqlServerEngine(DatabaseSettings(**values), connect=sim.connect), sim


def header_of(sim: Simulator, *devices: str):
    """RESTORE HEADERONLY's view of the media set the simulator wrote."""
    paths = [sim.server.host_path(d) for d in devices]
    return read_media(paths, list(devices), "RESTORE HEADERONLY")[0]
