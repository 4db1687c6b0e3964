"""A T-SQL tokenizer and a token cursor for the per-statement grammars; anything unexpected is error 102.

Tokens: ``[bracketed]`` identifiers (``]]`` is one ``]``), ``N'...'`` / ``'...'`` strings (``''`` is one ``'``),
integers, ``?`` bind markers (replaced by the bound values before parsing), words, and punctuation.
See "Transact-SQL syntax conventions" and "Database identifiers":
https://learn.microsoft.com/en-us/sql/relational-databases/databases/database-identifiers
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from tests.sqlsim.errors import SqlError, driver_error, fail, record

_TOKEN = re.compile(r"""
    (?P<space>\s+|--[^\n]*)
  | (?P<quoted>\[(?:[^\]]|\]\])*\])
  | (?P<string>N?'(?:[^']|'')*')
  | (?P<number>\d+)
  | (?P<param>\?)
  | (?P<word>[A-Za-z_@#][A-Za-z0-9_@#$]*)
  | (?P<punct><>|<=|>=|[(),.=;*<>+-])
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str           # "name" (word or [quoted]), "string", "number", "value" (bound parameter), "punct"
    value: Any
    quoted: bool = False

    def is_word(self, *words: str) -> bool:
        return self.kind == "name" and not self.quoted and str(self.value).upper() in words

    def shown(self) -> str:
        return str(self.value)[:30]


def tokenize(sql: str, params: Sequence[Any]) -> list[Token]:
    tokens: list[Token] = []
    pos, bound = 0, list(params)
    markers = 0
    while pos < len(sql):
        found = _TOKEN.match(sql, pos)
        if not found:
            raise fail(102, sql[pos:pos + 10])
        pos = found.end()
        kind, text = found.lastgroup, found.group()
        if kind == "space":
            continue
        if kind == "quoted":
            tokens.append(Token("name", text[1:-1].replace("]]", "]"), quoted=True))
        elif kind == "string":
            tokens.append(Token("string", text[text.index("'") + 1:-1].replace("''", "'")))
        elif kind == "number":
            tokens.append(Token("number", int(text)))
        elif kind == "param":
            markers += 1
            if markers > len(bound):
                raise SqlError(record(102, "?"))
            tokens.append(Token("value", bound[markers - 1]))
        elif kind == "word":
            tokens.append(Token("name", text))
        else:
            tokens.append(Token("punct", text))
    if markers != len(bound):
        raise driver_error("07002", "COUNT field incorrect or syntax error")
    return tokens


class Tokens:
    """A cursor over tokens with the small vocabulary the grammars need."""

    def __init__(self, tokens: list[Token]) -> None:
        self.items, self.pos = tokens, 0

    def peek(self, ahead: int = 0) -> Token | None:
        at = self.pos + ahead
        return self.items[at] if at < len(self.items) else None

    def done(self) -> bool:
        while self.peek() is not None and self.peek().kind == "punct" and self.peek().value == ";":
            self.pos += 1
        return self.peek() is None

    def unexpected(self) -> SqlError:
        token = self.peek()
        return fail(102, token.shown() if token else "end of statement")

    def next(self) -> Token:
        token = self.peek()
        if token is None:
            raise self.unexpected()
        self.pos += 1
        return token

    def accept(self, *words: str) -> str | None:
        token = self.peek()
        if token is not None and token.is_word(*words):
            self.pos += 1
            return str(token.value).upper()
        return None

    def expect(self, *words: str) -> str:
        found = self.accept(*words)
        if found is None:
            raise self.unexpected()
        return found

    def accept_punct(self, mark: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.value == mark:
            self.pos += 1
            return True
        return False

    def expect_punct(self, mark: str) -> None:
        if not self.accept_punct(mark):
            raise self.unexpected()

    def name(self) -> str:
        """An identifier: a [quoted] name or a plain word."""
        token = self.next()
        if token.kind != "name":
            self.pos -= 1
            raise self.unexpected()
        return str(token.value)

    def dotted(self) -> str:
        """``a.b.c`` as one lower-case string (for catalog names)."""
        parts = [self.name()]
        while self.accept_punct("."):
            parts.append(self.name())
        return ".".join(p.lower() for p in parts)

    def string(self) -> str:
        token = self.next()
        if token.kind not in ("string", "value") or not isinstance(token.value, str):
            self.pos -= 1
            raise self.unexpected()
        return str(token.value)

    def number(self) -> int:
        token = self.next()
        if token.kind not in ("number", "value") or not isinstance(token.value, int):
            self.pos -= 1
            raise self.unexpected()
        return int(token.value)

    def end(self) -> None:
        if not self.done():
            raise self.unexpected()
