"""The security statements `config check --connect` prints as fixes, run as one batch separated by ``;``:

``USE [db]``, ``GRANT <server permission> TO [login]`` (CREATE ANY DATABASE, ALTER ANY DATABASE, VIEW SERVER
STATE), ``ALTER SERVER ROLE [dbcreator] ADD MEMBER [login]``, ``IF USER_ID(N'name') IS NULL CREATE USER [name]
FOR LOGIN [login]`` and ``ALTER ROLE [db_backupoperator | db_owner] ADD MEMBER [user]`` in the current
database. Only a sysadmin may run them here (15247); a role member must be a user of the database (15151), a
user must map to a login (15007). A database user is named like its login.
https://learn.microsoft.com/en-us/sql/t-sql/statements/grant-server-permissions-transact-sql
https://learn.microsoft.com/en-us/sql/t-sql/statements/alter-server-role-transact-sql
https://learn.microsoft.com/en-us/sql/t-sql/statements/alter-role-transact-sql
https://learn.microsoft.com/en-us/sql/t-sql/statements/create-user-transact-sql
"""
from __future__ import annotations

from tests.sqlsim.errors import Record, SqlError, fail
from tests.sqlsim.lexer import Tokens
from tests.sqlsim.results import Outcome
from tests.sqlsim.state import Login, Server

_SERVER_PERMISSIONS = {"CREATE ANY DATABASE", "ALTER ANY DATABASE", "VIEW SERVER STATE"}
_DATABASE_ROLES = {"db_backupoperator", "db_owner"}


def starts_security_batch(tokens: Tokens) -> bool:
    first, second = tokens.peek(), tokens.peek(1)
    if first is None:
        return False
    return first.is_word("USE", "GRANT", "IF") or (
        first.is_word("ALTER") and second is not None and second.is_word("SERVER", "ROLE"))


def _denied() -> SqlError:
    return SqlError(Record(15247, "User does not have permission to perform this action.", "42000"))


def _login(server: Server, name: str) -> Login:
    if name not in server.logins:
        raise SqlError(Record(15007, f"'{name}' is not a valid login or you do not have permission.", "42000"))
    return server.logins[name]


def run_batch(server: Server, login: Login, tokens: Tokens) -> Outcome:
    database = "master"
    while not tokens.done():
        if tokens.accept("USE"):
            database = tokens.name()
            if database != "master" and server.database(database) is None:
                raise fail(911, database)
        elif not login.sysadmin:
            raise _denied()
        elif tokens.accept("GRANT"):
            words = []
            while not tokens.accept("TO"):
                words.append(tokens.name().upper())
            permission = " ".join(words)
            if permission not in _SERVER_PERMISSIONS or database != "master":
                raise fail(102, permission[:30])
            _login(server, tokens.name()).server_permissions.add(permission)
        elif tokens.accept("IF"):
            _create_user(server, database, tokens)
        else:
            tokens.expect("ALTER")
            server_role = tokens.accept("SERVER") is not None
            tokens.expect("ROLE")
            role = tokens.name().lower()
            tokens.expect("ADD")
            tokens.expect("MEMBER")
            member = tokens.name()
            if server_role:
                if role != "dbcreator":
                    raise fail(102, role)
                _login(server, member).server_roles.add(role)
                continue
            roles = server.logins[member].database_roles if member in server.logins else {}
            if role not in _DATABASE_ROLES or database not in roles:
                raise SqlError(Record(15151, f"Cannot add the principal '{member}', because it does not exist or "
                                             "you do not have permission.", "42000"))
            roles[database].add(role)
    return Outcome()


def _create_user(server: Server, database: str, tokens: Tokens) -> None:
    """``IF USER_ID(N'name') IS NULL CREATE USER [name] FOR LOGIN [login]``."""
    tokens.expect("USER_ID")
    tokens.expect_punct("(")
    name = tokens.string()
    tokens.expect_punct(")")
    tokens.expect("IS")
    tokens.expect("NULL")
    tokens.expect("CREATE")
    tokens.expect("USER")
    user = tokens.name()
    tokens.expect("FOR")
    tokens.expect("LOGIN")
    login = _login(server, tokens.name())
    if name == user == login.name:
        login.database_roles.setdefault(database, set())
