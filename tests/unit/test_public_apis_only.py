"""workers/ uses other libraries through their public APIs only (issue 14): no ``exec``, no writes into an
object's ``__dict__``, and no private-named methods (``def _x``) in a class that subclasses a class of pika,
smbprotocol, smbclient, minio or urllib3 (that would override, or add to, the library's internals).

The scan reads the source (AST), so it also covers modules that are never imported by the other tests."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ROOT / "workers"
THIRD_PARTY = {"pika", "smbprotocol", "smbclient", "minio", "urllib3"}


def _imported_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted origin for every import in the module (``import a.b as c``, ``from a import b``)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                    alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _origin(expr: ast.expr, names: dict[str, str]) -> str | None:
    """The dotted origin of a base-class expression (``Name`` or ``a.b.C``), or None if it is not imported."""
    chain: list[str] = []
    while isinstance(expr, ast.Attribute):
        chain.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Call):          # e.g. a class factory: judge what is called
        return _origin(expr.func, names)
    if not isinstance(expr, ast.Name) or expr.id not in names:
        return None
    return ".".join([names[expr.id], *reversed(chain)])


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _writes_dict(target: ast.expr) -> bool:
    """``x.__dict__[k] = ...`` or ``x.__dict__ = ...`` (also as part of a tuple target)."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return any(_writes_dict(t) for t in target.elts)
    if isinstance(target, ast.Subscript):
        target = target.value
    return isinstance(target, ast.Attribute) and target.attr == "__dict__"


def findings(path: Path) -> list[str]:
    """Every breach of the rule in one source file, as ``file:line: what``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names, found = _imported_names(tree), []
    where = path.relative_to(ROOT).as_posix()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "exec" or \
                    isinstance(func, ast.Attribute) and func.attr == "exec" and \
                    isinstance(func.value, ast.Name) and func.value.id == "builtins":
                found.append(f"{where}:{node.lineno}: exec()")
            if isinstance(func, ast.Attribute) and func.attr in {"update", "setdefault", "__setitem__"} and \
                    isinstance(func.value, ast.Attribute) and func.value.attr == "__dict__":
                found.append(f"{where}:{node.lineno}: writes into __dict__ ({func.attr})")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_writes_dict(t) for t in targets):
                found.append(f"{where}:{node.lineno}: assignment into __dict__")
        elif isinstance(node, ast.ClassDef):
            bases = [o for o in (_origin(b, names) for b in node.bases) if o]
            foreign = [o for o in bases if o.split(".")[0] in THIRD_PARTY]
            if not foreign:
                continue
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_private(item.name):
                    found.append(f"{where}:{item.lineno}: {node.name}.{item.name} is a private-named method "
                                 f"in a subclass of {', '.join(foreign)}")
    return found


def test_workers_use_other_libraries_through_their_public_apis_only():
    # Given every Python module under workers/ (the runtime included)
    sources = sorted(WORKERS.rglob("*.py"))
    assert len(sources) > 5
    # When each is scanned for exec, writes into __dict__ and private overrides in third-party subclasses
    found = [f for path in sources for f in findings(path)]
    # Then none is found
    assert found == [], "private-API uses in workers/:\n" + "\n".join(found)


def test_the_one_private_module_we_use_is_imported_in_one_place_only():
    # Given every module under workers/
    # When each is searched for imports of smbclient's private smbclient._io
    importers = [path.relative_to(WORKERS).as_posix() for path in sorted(WORKERS.rglob("*.py"))
                 for node in ast.walk(ast.parse(path.read_text()))
                 if (isinstance(node, ast.ImportFrom) and node.module == "smbclient._io")
                 or (isinstance(node, ast.Import) and any(a.name == "smbclient._io" for a in node.names))]
    # Then only workers/smb/io.py imports it (smbprotocol is pinned to the tested minor for it)
    assert importers == ["smb/io.py"]


BREACHES = {
    "exec": ("exec('x = 1')\n", "exec()"),
    "dict-item": ("class A: pass\na = A()\na.__dict__['x'] = 1\n", "assignment into __dict__"),
    "dict-update": ("class A: pass\nA().__dict__.update(x=1)\n", "writes into __dict__"),
    "private-override": ("from smbprotocol.connection import Connection\n"
                         "class C(Connection):\n    def _encrypt(self, b, s):\n        return b\n",
                         "C._encrypt is a private-named method in a subclass of smbprotocol.connection.Connection"),
    "module-base": ("import minio as m\nclass M(m.Minio):\n    def _build_headers(self):\n        pass\n",
                    "M._build_headers is a private-named method in a subclass of minio.Minio"),
    "aliased-base": ("from pika import adapters as ad\nclass K(ad.SelectConnection):\n"
                     "    def _adapter_emit_data(self, d):\n        pass\n",
                     "subclass of pika.adapters.SelectConnection"),
}


@pytest.mark.parametrize("case", BREACHES)
def test_the_scan_finds_each_kind_of_breach(case, tmp_path, monkeypatch):
    # Given a module with one kind of breach
    source, expected = BREACHES[case]
    path = tmp_path / "mod.py"
    path.write_text(source)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    # When it is scanned
    found = findings(path)
    # Then the breach is reported with its line
    assert len(found) == 1 and expected in found[0] and found[0].startswith("mod.py:")


def test_the_scan_allows_public_overrides_and_own_private_helpers(tmp_path, monkeypatch):
    # Given a subclass of a third-party class overriding a public method and dunders, and a private method in
    # a class of our own, and a read of __dict__
    path = tmp_path / "ok.py"
    path.write_text("import pika\nclass P(pika.BlockingConnection):\n    def __init__(self):\n        pass\n"
                    "    def close(self):\n        pass\nclass Own:\n    def _helper(self):\n"
                    "        return vars(self), self.__dict__.get('x')\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    # When it is scanned, Then nothing is reported
    assert findings(path) == []
