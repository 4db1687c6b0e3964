"""PowerShell read as a syntax tree, for the tests of the generated controller script.

No `pwsh` can be installed here (no Debian package; PyPI has none that ships it; the npm package `pwsh` downloads
PowerShell from GitHub releases at install time, which this network refuses; NuGet is not reached), so the
script is parsed with the tree-sitter PowerShell grammar (PyPI `tree-sitter-powershell`, a test extra): a real
parser of the language, which marks what it cannot parse (an unbalanced brace, an unterminated string) with
ERROR / MISSING nodes. Tests walk the tree: commands in source order, pipelines, the param block, try/finally.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from tests.fixtures import require_service


def _parser():
    try:
        import tree_sitter_powershell
        from tree_sitter import Language, Parser
    except ImportError as exc:
        require_service("tree-sitter PowerShell grammar", f"{exc} (pip install -e '.[test]')")
    return Parser(Language(tree_sitter_powershell.language()))


def parse(text: str):
    """The root node of ``text``'s syntax tree."""
    return _parser().parse(text.encode("utf-8")).root_node


def errors(root) -> list[str]:
    """Where the parser found no valid PowerShell: 'line:column: text' of every ERROR / MISSING node."""
    return [f"{n.start_point[0] + 1}:{n.start_point[1] + 1}: {n.text.decode()[:60]!r}" for n in walk(root)
            if n.type == "ERROR" or n.is_missing]


def walk(node) -> Iterator:
    yield node
    for child in node.children:
        yield from walk(child)


def text(node) -> str:
    return " ".join(node.text.decode().split())


def inside(node, *types: str) -> bool:
    """Whether an ancestor of ``node`` is of one of ``types``."""
    parent = node.parent
    while parent is not None:
        if parent.type in types:
            return True
        parent = parent.parent
    return False


@dataclass(frozen=True)
class Command:
    name: str                       # as written: Restore-AppServiceStamp, net.exe, ...
    arguments: str                  # the rest of the command, whitespace normalised
    pipeline: tuple[str, ...]       # every command name of its pipeline, in order
    node: object


def commands(root) -> list[Command]:
    """Every command in source order, with the pipeline it is part of."""
    out = []
    for node in walk(root):
        if node.type != "command":
            continue
        name = next((c for c in walk(node) if c.type == "command_name"), None)
        elements = next((c for c in node.children if c.type == "command_elements"), None)
        chain = node.parent
        members = [c for c in chain.children if c.type == "command"] if chain is not None else [node]
        out.append(Command(text(name) if name is not None else "", text(elements) if elements is not None else "",
                           tuple(text(next(c for c in walk(m) if c.type == "command_name")) for m in members), node))
    return out


def string_values(node) -> list[str]:
    """The single-quoted (verbatim) string literals under ``node``, unquoted."""
    return [n.text.decode()[1:-1].replace("''", "'") for n in walk(node) if n.type == "verbatim_string_characters"]
