"""A small SELECT: ``SELECT [TOP (n)] expr [AS alias], ... [FROM view [AS a] [JOIN view [AS b] ON a.x = b.y]]
[WHERE col = expr [AND ...]] [ORDER BY col [ASC|DESC]]`` over the views in :mod:`tests.sqlsim.catalog`
(and ``[db].sys.tables``, another database's user tables).

Expressions: column references, literals, bound parameters, ``CASE WHEN col IS [NOT] NULL THEN e ELSE e END``
and the functions in ``catalog.FUNCTIONS``. Anything else is 102 (syntax) or 208 (unknown view).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tests.sqlsim.catalog import FUNCTIONS, LOGIN_FUNCTIONS, TABLES, user_tables
from tests.sqlsim.errors import fail
from tests.sqlsim.lexer import Tokens
from tests.sqlsim.results import Outcome
from tests.sqlsim.state import Login, Server

Row = dict[str, Any]
Expr = Callable[[Row], Any]


@dataclass
class _Query:
    server: Server
    login: Login
    tokens: Tokens

    def column(self) -> tuple[str, Expr]:
        ref = self.tokens.dotted()

        def value(row: Row) -> Any:
            if ref not in row:
                raise fail(207 if "." not in ref else 4104, ref)
            return row[ref]
        return ref.rsplit(".", 1)[-1], value

    def expr(self) -> tuple[str, Expr]:
        t = self.tokens
        token = t.peek()
        if token is None:
            raise t.unexpected()
        if token.kind in ("string", "number", "value"):
            t.next()
            return "", lambda row, v=token.value: v
        if t.accept("NULL"):
            return "", lambda row: None
        if t.accept("CASE"):
            t.expect("WHEN")
            _, tested = self.column()
            t.expect("IS")
            negated = t.accept("NOT") is not None
            t.expect("NULL")
            t.expect("THEN")
            _, then = self.expr()
            t.expect("ELSE")
            _, other = self.expr()
            t.expect("END")
            return "", lambda row: then(row) if (tested(row) is None) != negated else other(row)
        if token.kind == "name" and not token.quoted and t.peek(1) is not None and (
                t.peek(1).value == "(" or t.peek(1).value == "." and str(token.value).lower() == "sys"):
            start = t.pos
            name = t.dotted()
            if name not in FUNCTIONS and name not in LOGIN_FUNCTIONS or not t.accept_punct("("):
                t.pos = start
                return self.column()
            args = []
            if not t.accept_punct(")"):
                args.append(self.expr()[1])
                while t.accept_punct(","):
                    args.append(self.expr()[1])
                t.expect_punct(")")
            if name in LOGIN_FUNCTIONS:
                with_login = LOGIN_FUNCTIONS[name]
                return "", lambda row: with_login(self.server, self.login, *[a(row) for a in args])
            function = FUNCTIONS[name]
            return "", lambda row: function(self.server, *[a(row) for a in args])
        return self.column()


def _source(server: Server, login: Login, tokens: Tokens) -> tuple[str, list[Row]]:
    view = tokens.dotted()
    if view.endswith(".sys.tables") and view.count(".") == 2:
        rows = user_tables(server, login, view.split(".")[0])
    elif view not in TABLES:
        raise fail(208, view)
    else:
        rows = TABLES[view](server, login)
    alias = view.rsplit(".", 1)[-1]
    if tokens.accept("AS") or (tokens.peek() is not None and tokens.peek().kind == "name"
                               and not tokens.peek().is_word("JOIN", "WHERE", "ORDER", "ON", "INNER")):
        alias = tokens.name().lower()
    rows = [{**{f"{alias}.{k}": v for k, v in r.items()}, **r} for r in rows]
    return alias, rows


def select(server: Server, login: Login, tokens: Tokens) -> Outcome:
    query = _Query(server, login, tokens)
    top = None
    if tokens.accept("TOP"):
        tokens.expect_punct("(")
        top = tokens.number()
        tokens.expect_punct(")")
    items: list[tuple[str, Expr]] = []
    while True:
        label, expr = query.expr()
        if tokens.accept("AS"):
            label = tokens.name()
        items.append((label, expr))
        if not tokens.accept_punct(","):
            break
    rows: list[Row] = [{}]
    if tokens.accept("FROM"):
        _, rows = _source(server, login, tokens)
        while tokens.accept("INNER", "JOIN"):
            tokens.accept("JOIN")
            _, right = _source(server, login, tokens)
            tokens.expect("ON")
            _, left_key = query.column()
            tokens.expect_punct("=")
            _, right_key = query.column()
            rows = [{**a, **b} for a in rows for b in right if left_key({**a, **b}) == right_key({**a, **b})]
    if tokens.accept("WHERE"):
        conditions = []
        while True:
            _, left = query.column()
            tokens.expect_punct("=")
            _, right = query.expr()
            conditions.append((left, right))
            if not tokens.accept("AND"):
                break
        rows = [r for r in rows if all(left(r) == right(r) for left, right in conditions)]
    if tokens.accept("ORDER"):
        tokens.expect("BY")
        _, key = query.column()
        descending = tokens.accept("DESC", "ASC") == "DESC"
        rows = sorted(rows, key=key, reverse=descending)
    tokens.end()
    if top is not None:
        rows = rows[:top]
    labels = [label or "" for label, _ in items]
    outcome = Outcome()
    outcome.table(labels, [{label: expr(r) for label, (_, expr) in zip(labels, items)} for r in rows])
    return outcome
