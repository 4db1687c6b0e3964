"""BACKUP DATABASE | LOG and RESTORE {VERIFYONLY | FILELISTONLY | HEADERONLY | DATABASE | LOG}: grammar and
behaviour (RESTORE LOG and RESTORE ... WITH RECOVERY: recovery.py).

Grammar and options: https://learn.microsoft.com/en-us/sql/t-sql/statements/backup-transact-sql and
https://learn.microsoft.com/en-us/sql/t-sql/statements/restore-statements-transact-sql (arguments:
https://learn.microsoft.com/en-us/sql/t-sql/statements/restore-statements-arguments-transact-sql).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.sqlsim.errors import SqlError, fail, record
from tests.sqlsim.lexer import Tokens
from tests.sqlsim.media import files_from, read_media, restored_content, write_media
from tests.sqlsim.recovery import recover_only, restore_log
from tests.sqlsim.results import Outcome
from tests.sqlsim.state import NO_COMPRESSION, BackupHistory, Database, Login, Server

_FLAGS = {"CHECKSUM", "NO_CHECKSUM", "FORMAT", "NOFORMAT", "INIT", "NOINIT", "COMPRESSION", "NO_COMPRESSION",
          "COPY_ONLY", "REPLACE", "RECOVERY", "NORECOVERY", "CONTINUE_AFTER_ERROR", "STOP_ON_ERROR", "SKIP",
          "NOSKIP", "REWIND", "NOREWIND", "UNLOAD", "NOUNLOAD"}
_NUMBERS = {"MAXTRANSFERSIZE", "BUFFERCOUNT", "BLOCKSIZE", "FILE"}
_STRINGS = {"DESCRIPTION", "NAME", "MEDIANAME"}
_BACKUP_ONLY = {"FORMAT", "NOFORMAT", "INIT", "NOINIT", "COMPRESSION", "NO_COMPRESSION", "COPY_ONLY", "SKIP",
                "NOSKIP", "DESCRIPTION", "NAME", "BUFFERCOUNT"}
_RESTORE_ONLY = {"REPLACE", "RECOVERY", "NORECOVERY", "MOVE", "FILE"}


@dataclass
class Options:
    flags: set[str] = field(default_factory=set)
    values: dict[str, int | str] = field(default_factory=dict)
    moves: dict[str, str] = field(default_factory=dict)
    stats: int | None = None


def devices(tokens: Tokens) -> tuple[str, list[str]]:
    """``DISK = N'a' [, DISK = N'b']`` or ``URL = ...``; all of one kind."""
    kinds, paths = set(), []
    while True:
        kinds.add(tokens.expect("DISK", "URL", "TAPE"))
        tokens.expect_punct("=")
        paths.append(tokens.string())
        if not tokens.accept_punct(","):
            break
    if len(kinds) != 1 or "TAPE" in kinds:
        raise fail(3201 if "TAPE" in kinds else 102, paths[0], "3(The system cannot find the path specified.)")
    return kinds.pop(), paths


def options(tokens: Tokens, forbidden: set[str]) -> Options:
    found = Options()
    if not tokens.accept("WITH"):
        return found
    while True:
        word = tokens.name().upper()
        if word in forbidden:
            tokens.pos -= 1
            raise tokens.unexpected()
        if word in _FLAGS:
            found.flags.add(word)
        elif word == "STATS":
            found.stats = tokens.number() if tokens.accept_punct("=") else 10
        elif word in _NUMBERS or word in _STRINGS:
            tokens.expect_punct("=")
            found.values[word] = tokens.number() if word in _NUMBERS else tokens.string()
        elif word == "MOVE":
            logical = tokens.string()
            tokens.expect("TO")
            found.moves[logical] = tokens.string()
        else:
            tokens.pos -= 1
            raise tokens.unexpected()
        if not tokens.accept_punct(","):
            return found


def _percents(stats: int | None) -> list[int]:
    if not stats:
        return []
    steps = list(range(stats, 100, stats))
    return steps + [100]


def _targets(server: Server, kind: str, paths: list[str], terminating: str, writing: bool) -> list[Path]:
    local = []
    for device in paths:
        if kind == "URL":
            host = server.root / "url" / device.split("://", 1)[-1].replace(":", "_")
            if "/".join(device.split("/")[:4]) not in server.credentials:
                raise fail(3201, device, "50(The request is not supported.)", terminating=terminating)
            if writing:
                host.parent.mkdir(parents=True, exist_ok=True)
            local.append(host)
            continue
        host = server.host_path(device)
        parent = device.replace("\\", "/").rsplit("/", 1)[0]
        if any(parent.lower() == d.replace("\\", "/").lower().rstrip("/") for d in server.faults.denied_dirs):
            raise fail(3201, device, "5(Access is denied.)", terminating=terminating)
        if not host.parent.is_dir():
            raise fail(3201, device, "3(The system cannot find the path specified.)", terminating=terminating)
        local.append(host)
    return local


# ------------------------------------------------------------------------------------------------- BACKUP
def backup(server: Server, login: Login, autocommit: bool, tokens: Tokens) -> Outcome:
    log = tokens.expect("DATABASE", "LOG") == "LOG"
    name = tokens.name()
    tokens.expect("TO")
    kind, paths = devices(tokens)
    opts = options(tokens, _RESTORE_ONLY - {"NORECOVERY"} if log else _RESTORE_ONLY)
    tokens.end()
    stop = "BACKUP LOG" if log else "BACKUP DATABASE"
    if not autocommit:
        raise fail(3021, terminating=stop)
    database = server.database(name)
    if database is None:
        raise fail(911, name, terminating=stop)
    if not login.in_role(name, "db_owner", "db_backupoperator"):
        raise fail(262, stop, name, terminating=stop)
    if database.state != "ONLINE":
        raise fail(942, name, terminating=stop)
    compressed = "COMPRESSION" in opts.flags
    if compressed and server.edition in NO_COMPRESSION:
        raise fail(1844, stop, server.edition, terminating=stop)
    copy_only = "COPY_ONLY" in opts.flags
    if database.ag_name and server.ag_role == "SECONDARY" and not (copy_only or log):
        raise fail(3059, terminating=stop)
    if log and database.recovery_model == "SIMPLE":
        raise fail(4208, terminating=stop)
    if log and not database.log_chain_started:
        raise fail(4214, terminating=stop)
    tail = log and "NORECOVERY" in opts.flags          # a tail-log backup takes the database to RESTORING
    if tail and database.sessions:
        raise fail(3101, terminating=stop)
    local = _targets(server, kind, paths, stop, writing=True)
    outcome = Outcome()
    faults = server.faults
    for percent in _percents(opts.stats):
        if faults.share_drops_after is not None and percent > faults.share_drops_after:
            local[0].write_bytes(b"partial")
            outcome.error = fail(3271, paths[0], "64(The specified network name is no longer available.)",
                                 terminating=stop)
            return outcome
        if faults.disk_full_after is not None and percent > faults.disk_full_after:
            local[0].write_bytes(b"partial")
            outcome.error = fail(3202, paths[0], "112(There is not enough space on the disk.)", terminating=stop)
            return outcome
        outcome.say(record(3211, percent))
    first, last = database.last_lsn, database.last_lsn + 1600000
    base = next((h.first_lsn for h in reversed(server.history)
                 if h.database_name == name and not h.is_copy_only and h.type == "D"), first - 1000000)
    if log:                                   # a log backup begins where the previous one ended (LSN chain)
        first = database.log_backed_up_to if database.log_backed_up_to is not None else base
    write_media(local, paths, database, version=server.version, checksum="CHECKSUM" in opts.flags,
                compressed=compressed, copy_only=copy_only, lsns=(first, last, base), backup_type=2 if log else 1,
                server_name=server.name)
    database.last_lsn = last + 1
    if log and not copy_only:
        database.log_reuse_wait = "NOTHING"
        database.log_backed_up_to = last
    if tail:
        database.state = "RESTORING"
    elif not copy_only:
        database.log_chain_started = True
    if faults.damage_written:
        with open(local[-1], "r+b") as fh:
            fh.truncate(local[-1].stat().st_size - 100)
    size = sum(p.stat().st_size for p in local)
    ratio = 1 if _tde_pages_compressed_as_is(server, database, opts) else 5
    server.history.append(BackupHistory(server.next_id(), name, paths[0], first, last, base, size * ratio, size,
                                        copy_only, "L" if log else "D", software_version=server.version))
    outcome.say(*[record(4035, 6402, name, f.logical) for f in database.files])
    outcome.say(record(3014, stop, 6402 * len(database.files), 311))
    return outcome


def _tde_pages_compressed_as_is(server: Server, database: Database, opts: Options) -> bool:
    """SQL Server 2016 / 2017 compress a TDE database's pages (decrypt, compress, encrypt) only when
    MAXTRANSFERSIZE > 65536; otherwise encrypted pages are compressed as they are and barely shrink
    (msdb compressed_backup_size = backup_size). 2019 CU5 and later raise MAXTRANSFERSIZE themselves. BACKUP
    "MAXTRANSFERSIZE" argument: https://learn.microsoft.com/en-us/sql/t-sql/statements/backup-transact-sql"""
    return (database.encrypted and "COMPRESSION" in opts.flags and server.major in (13, 14)
            and int(opts.values.get("MAXTRANSFERSIZE", 65536)) <= 65536)


# ------------------------------------------------------------------------------------------------ RESTORE
def restore(server: Server, login: Login, autocommit: bool, tokens: Tokens) -> Outcome:
    what = tokens.expect("DATABASE", "LOG", "VERIFYONLY", "FILELISTONLY", "HEADERONLY")
    name = tokens.name() if what in ("DATABASE", "LOG") else None
    if what == "DATABASE" and tokens.accept("WITH"):
        return recover_only(server, login, str(name), tokens)
    tokens.expect("FROM")
    kind, paths = devices(tokens)
    opts = options(tokens, _BACKUP_ONLY if what in ("DATABASE", "LOG") else _BACKUP_ONLY | _RESTORE_ONLY)
    tokens.end()
    stop = {"DATABASE": "RESTORE DATABASE", "LOG": "RESTORE LOG", "VERIFYONLY": "VERIFY DATABASE",
            "FILELISTONLY": "RESTORE FILELIST", "HEADERONLY": "RESTORE HEADERONLY"}[what]
    if not autocommit and what in ("DATABASE", "LOG"):
        raise fail(3021, terminating=stop)
    if not login.may("CREATE ANY DATABASE"):
        raise fail(262, "CREATE DATABASE", "master", terminating=stop)
    local = _targets(server, kind, paths, stop, writing=False)
    header, payload = read_media(local, paths, stop)
    newer = int(header.software_version.split(".")[0]) > server.major
    outcome = Outcome()
    if what == "HEADERONLY" or what == "FILELISTONLY":
        if newer:
            raise fail(3241, paths[0], terminating=stop)
        if what == "HEADERONLY":
            row = header.headeronly_row()
            outcome.table(list(row), [row])
        else:
            rows = header.filelist_rows()
            outcome.table(list(rows[0]), rows)
        return outcome
    if what == "VERIFYONLY":
        if newer:
            raise fail(3241, paths[0], terminating=stop)
        if "CHECKSUM" in opts.flags and not header.has_checksums:
            raise fail(3187, terminating=stop)
        outcome.say(record(3262))
        return outcome
    assert name is not None
    if newer:
        raise fail(3169, header.software_version, server.version, terminating=stop)
    if what == "LOG":
        restore_log(server, name, header, payload, "NORECOVERY" in opts.flags, _percents(opts.stats), paths[0],
                    stop, outcome)
        return outcome
    if header.backup_type != 1:
        raise fail(3135, paths[0], "BACKUP LOG", terminating=stop)
    _restore_database(server, name, header, payload, opts, stop, outcome, paths[0])
    return outcome


def _restore_database(server: Server, name: str, header, payload: bytes, opts: Options, stop: str,
                      outcome: Outcome, device: str) -> None:
    existing = server.database(name)
    if existing is not None:
        if existing.ag_name:
            raise fail(3104, name, terminating=stop)
        if existing.sessions > 0:
            raise fail(3101, terminating=stop)
        if "REPLACE" not in opts.flags and existing.name != header.database_name:
            raise fail(3154, name, terminating=stop)
    if header.containment == "PARTIAL" and not server.contained_authentication:
        raise fail(12824, terminating=stop)
    files = files_from(header)
    known = {f.logical for f in files}
    for logical in opts.moves:
        if logical not in known:
            raise fail(3234, logical, header.database_name, terminating=stop)
    overwritten: list[Database] = []
    for item in files:
        item.physical = opts.moves.get(item.logical, item.physical)
        if item.physical in server.faults.locked_files:
            raise fail(3634, "32(The process cannot access the file because it is being used by another "
                             "process.)", "RestoreContainer::ValidateTargetForCreation", item.physical,
                       terminating=stop)
        owner = server.owner_of(item.physical)
        if owner is not None and owner.name != name:
            if owner.state != "OFFLINE" or "REPLACE" not in opts.flags:
                error = fail(1834, item.physical, owner.name)
                raise SqlError(*error.records, record(3156, item.logical, item.physical), record(3013, stop))
            overwritten.append(owner)
    for percent in _percents(opts.stats):
        if server.faults.restore_fails_after is not None and percent > server.faults.restore_fails_after:
            server.databases[name] = Database(name, files, state="RESTORING", containment=header.containment,
                                              incomplete=True)
            outcome.error = fail(3203, device, "64(The specified network name is no longer available.)",
                                 terminating=stop)
            return
        outcome.say(record(3211, percent))
    content = restored_content(payload)
    for owner in overwritten:
        owner.damaged_by_restore = name
    recovered = "NORECOVERY" not in opts.flags
    server.databases[name] = Database(name, files, state="ONLINE" if recovered else "RESTORING",
                                      recovery_model=header.recovery_model, containment=header.containment,
                                      rows=dict(content["rows"]), corrupt_pages=list(content["corrupt_pages"]),
                                      last_lsn=header.last_lsn + 1,
                                      restored_to=None if recovered else header.last_lsn)
    server.restored(name, "D")
    outcome.say(*[record(4035, 6402, name, f.logical) for f in files])
    outcome.say(record(3014, "RESTORE DATABASE", 6402 * len(files), 402))
