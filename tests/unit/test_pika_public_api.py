"""workers/ uses pika through its public API only: an AST scan of the source, so an upgrade of pika (pinned to
the major version tested) cannot silently break the one path a DR tool cannot lose."""
from __future__ import annotations

import ast
from pathlib import Path

WORKERS = Path(__file__).resolve().parents[2] / "workers"
OWN = {"self", "cls"}  # a module's own objects may use their own private attributes


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports_pika(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "pika" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pika":
            return True
    return False


def _pika_names(tree: ast.Module) -> set[str]:
    """Local names bound to pika or to something imported from it."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "pika"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pika":
            names |= {a.asname or a.name for a in node.names}
    return names


def _root(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def violations(source: str, checked: bool) -> list[str]:
    """What in ``source`` reaches into pika. ``checked``: the module handles pika objects (it imports pika,
    or it is part of the runtime), so any private attribute on a foreign object counts."""
    tree = ast.parse(source)
    found: list[str] = []
    pika_names = _pika_names(tree)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"{line}: imports {a.name}" for a in node.names
                      if a.name.split(".")[0] == "pika" and any(map(_private, a.name.split(".")))]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pika":
            if any(map(_private, node.module.split("."))):
                found.append(f"{line}: imports from the private module {node.module}")
            found += [f"{line}: imports the private name {a.name} from {node.module}" for a in node.names
                      if _private(a.name)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("exec", "eval", "compile"):
                found.append(f"{line}: calls {node.func.id}()")
            elif (checked and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1
                  and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                  and (_private(node.args[1].value) or node.args[1].value == "__dict__")):
                found.append(f"{line}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.Attribute) and checked:
            own = isinstance(node.value, ast.Name) and node.value.id in OWN
            if node.attr == "__dict__" or (_private(node.attr) and not own):
                found.append(f"{line}: accesses .{node.attr} on {ast.unparse(node.value)}")
        elif isinstance(node, ast.ClassDef) and any(_root(base) in pika_names for base in node.bases):
            found += [f"{item.lineno}: {node.name} overrides pika's private {item.name}" for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(item.name)]
    return found


def test_no_module_under_workers_reaches_into_pika():
    # Given every module of the product
    report = []
    for path in sorted(WORKERS.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        checked = _imports_pika(tree) or path.parent.name == "runtime"
        # When it is scanned for private pika names, private attributes, __dict__ writes, exec and overrides
        report += [f"{path.relative_to(WORKERS.parent)}:{v}" for v in violations(source, checked)]
    # Then nothing is found
    assert report == [], "pika's public API only (see DESIGN.md §2):\n" + "\n".join(report)


def test_the_scan_catches_each_kind_of_reach_in():
    # Given snippets that each do what the old runtime did
    snippets = {
        "from pika.adapters.utils import io_services_utils as _u\nconn._frame_buffer = b''": "_frame_buffer",
        "import pika\nclass C(pika.SelectConnection):\n    def _adapter_emit_data(self, d): pass": "overrides",
        "from pika.spec import BasicProperties\np = BasicProperties.__new__(BasicProperties)\np.__dict__ = {}":
            "__dict__",
        "exec(compile('x = 1', 'f', 'exec'))": "exec",
        "import pika._private": "pika._private",
        "getattr(channel, '_consumers')": "_consumers",
    }
    for source, expected in snippets.items():
        # When each is scanned as part of the runtime
        found = violations(source, checked=True)
        # Then the reach-in is reported
        assert any(expected in v for v in found), (source, found)
    # And a module's use of its own private attributes is not
    assert violations("class R:\n    def f(self):\n        return self._ch.basic_ack(1)", checked=True) == []
