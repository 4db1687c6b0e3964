"""The house's layering (DESIGN.md section 2, issue 14): arrows point down, workers never import workers, no
import cycles, and only the composition level sees the whole configuration (each package takes its own sections).

The scan reads the source (AST) of every module under workers/ and contracts/, so it sees every import: top-level
ones, lazy ones inside functions, and ones under ``if TYPE_CHECKING:`` (a type-only import still ties two
packages together). Imports of modules outside workers/ and contracts/ (stdlib, third-party) are ignored."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The layer map, lowest floor first. A module may import its own package and any package on a LOWER floor; it may
# never import a package on a higher floor. On the "worker" floor a package may not import another worker package
# either (what two workers share moves down a floor). Within the other floors packages may import each other, as
# long as no import cycle results.
#   0 ground       contracts                        event models, JSON Schemas
#   1 framework    runtime, middleware              AMQP runner, topology, DLQ, errors, its own settings sections
#                                                   (broker, retry, worker, metrics, log) and the small parsers
#                                                   every section may use; the middleware the runner calls
#   2 libraries    smb, storage, engines, senders,  SMB sessions and error classification, formats, stores,
#                  artifacts, repository            engines, senders, the file-share repository
#   3 workers      secrets, upload, dbbackup,       one folder per worker; never import each other
#                  fileshare, functions, catalog,
#                  notifier, mirror
#   4 composition  app, cli, demo, drill, recover, `config` holds the root Settings and load_settings; `app` hands
#                  scheduler, config                each worker its sections; `drill` is a composition-level
#                                                   command (like cli/): it restores what several workers stored
LAYERS: dict[str, int] = {
    "contracts": 0,
    "runtime": 1, "middleware": 1,
    "smb": 2, "storage": 2, "engines": 2, "senders": 2, "artifacts": 2, "repository": 2,
    "secrets": 3, "upload": 3, "dbbackup": 3, "fileshare": 3, "functions": 3, "catalog": 3, "notifier": 3,
    "mirror": 3,
    "app": 4, "cli": 4, "demo": 4, "demo_azurite": 4, "drill": 4, "recover": 4, "scheduler": 4, "logschedule": 4,
    "config": 4,
}
WORKER_FLOOR = 3
COMPOSITION_FLOOR = 4
NAMES = {0: "ground", 1: "framework", 2: "library", 3: "worker", 4: "composition"}
ROOT_SETTINGS = "workers.config"  # the root Settings and load_settings: composition only


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module under workers/ and contracts/."""
    found: dict[str, Path] = {}
    for top in ("workers", "contracts"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module that ``name`` (a module or a module's attribute) refers to, or None if it is not ours."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours that ``module`` imports, anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved and resolved != module:
                found.add(resolved)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _package(module: str) -> str:
    """The layer-map key of a module: ``contracts``, or the first name below ``workers``."""
    parts = module.split(".")
    return parts[0] if parts[0] == "contracts" or len(parts) == 1 else parts[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_package_is_on_the_layer_map():
    # Given every module under workers/ and contracts/
    packages = {_package(m) for m in _graph() if m != "workers"}
    # Then each belongs to a package the layer map places on a floor (a new package must be placed deliberately)
    assert packages - set(LAYERS) == set(), "add the new package to LAYERS in tests/unit/test_layering.py"


def test_no_import_cycles():
    # Given the import graph of workers/ and contracts/ (top-level and function-level imports alike)
    graph = _graph()
    # When its strongly connected components are computed
    cycles = _cycles(graph)
    # Then no two modules import each other, directly or through others
    assert cycles == [], f"import cycles (break them by moving the shared part into its own module): {cycles}"


def _violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        if module == "workers":
            continue
        mine = _package(module)
        for target in sorted(targets):
            theirs = _package(target)
            if target == "workers" or theirs == mine:
                continue
            if LAYERS[theirs] > LAYERS[mine]:
                found.append(f"{module} ({NAMES[LAYERS[mine]]}) imports {target} ({NAMES[LAYERS[theirs]]}): "
                             "an arrow points up")
            elif LAYERS[theirs] == LAYERS[mine] == WORKER_FLOOR:
                found.append(f"{module} imports {target}: a worker imports another worker; move what they share "
                             "down to a library")
    return found


def test_arrows_point_down_and_workers_never_import_workers():
    # Given the import graph and the layer map
    graph = _graph()
    # When each import is compared with the floors of the two packages
    violations = _violations(graph)
    # Then no import points up and no worker package imports another worker package
    assert violations == [], "\n".join(violations)


def _below_composition(module: str) -> bool:
    return module != "workers" and LAYERS[_package(module)] < COMPOSITION_FLOOR


def _importers_of_the_root_settings(graph: dict[str, set[str]]) -> list[str]:
    return [module for module, targets in sorted(graph.items()) if ROOT_SETTINGS in targets
            and _below_composition(module)]


def _reads_of_the_root_settings(source: str, fields: set[str]) -> list[str]:
    """``settings.<root field>`` / ``x.settings.<root field>`` in ``source``: the whole Settings passed in untyped."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in fields:
            base = node.value
            name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
            if name == "settings":
                found.append(f"line {node.lineno}: settings.{node.attr}")
    return found


def test_only_the_composition_sees_the_root_settings():
    # Given the import graph, and the root Settings module on the composition floor
    from workers.config import Settings
    graph = _graph()
    assert ROOT_SETTINGS in graph and LAYERS[_package(ROOT_SETTINGS)] == COMPOSITION_FLOOR
    # When the modules below the composition floor are checked
    importers = _importers_of_the_root_settings(graph)
    reads = {module: found for module, path in _modules().items() if _below_composition(module)
             and (found := _reads_of_the_root_settings(path.read_text(), set(Settings.model_fields)))}
    # Then none imports it, and none reads a section off a whole Settings handed to it: each takes its own sections
    assert importers == [], f"{importers} import {ROOT_SETTINGS}: take the sections you need (e.g. BrokerSettings " \
                            "from workers.runtime.settings) and let workers/app.py or the CLI pass them"
    assert reads == {}, f"these read sections off the whole Settings: {reads}; take the sections as parameters"


def test_each_section_is_owned_by_a_package():
    # Given the root Settings' sections
    from pydantic import BaseModel
    from workers.config import Settings
    homes = {name: field.annotation.__module__ for name, field in Settings.model_fields.items()
             if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}
    # Then each is defined in its own package's settings module (workers/<package>/settings.py), none at the root
    assert {"broker", "notify", "store", "retention", "database", "fileshare"} <= set(homes)
    assert {name: home for name, home in homes.items() if not re.fullmatch(r"workers\.\w+\.settings", home)} == {}


def test_the_checker_sees_an_upward_import_a_worker_import_and_a_cycle():
    # Given a graph with a runtime module importing a worker, a worker importing another worker, and a cycle
    graph = {"workers.runtime.x": {"workers.upload.handler"}, "workers.secrets.handler": {"workers.upload.handler"},
             "workers.upload.handler": {"workers.storage.a"}, "workers.storage.a": {"workers.storage.b"},
             "workers.storage.b": {"workers.storage.a"}}
    # When it is checked
    violations, cycles = _violations(graph), _cycles(graph)
    # Then all three are found
    assert [v.split(" ")[0] for v in violations] == ["workers.runtime.x", "workers.secrets.handler"]
    assert cycles == [["workers.storage.a", "workers.storage.b"]]


def test_the_checker_sees_the_root_settings_below_the_composition():
    # Given a runtime module and a worker importing the root Settings, the CLI doing the same, and a handler that
    # reads sections off a whole Settings it was handed
    graph = {"workers.runtime.x": {ROOT_SETTINGS}, "workers.upload.handler": {ROOT_SETTINGS},
             "workers.cli.run_cmd": {ROOT_SETTINGS}, "workers.storage.a": set()}
    source = "def build(settings, spec):\n    return spec.bind(settings.staging, self.settings.retention, s.store)\n"
    # When they are checked
    importers, reads = _importers_of_the_root_settings(graph), _reads_of_the_root_settings(source, {"staging",
                                                                                                   "retention", "store"})
    # Then the two below the composition are found, the CLI is not, and both reads are named
    assert importers == ["workers.runtime.x", "workers.upload.handler"]
    assert reads == ["line 2: settings.staging", "line 2: settings.retention"]
