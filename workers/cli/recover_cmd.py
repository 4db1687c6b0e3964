"""`recover plan|run|status|report`: the whole stamp back in the documented order (see workers/recover)."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from workers.cli.database_cmd import add_override_flags
from workers.cli.keyopts import add_key_options, keyring_from_args
from workers.cli.stores import artifact_store
from workers.config import Settings
from workers.runtime.errors import ConfigurationError
from workers.runtime.parsing import comma_list


def register(sub) -> None:
    p = sub.add_parser("recover", help="recover a whole stamp: plan and check every target, restore the "
                       "databases, file share and secrets, write the controller script; resumable, timed")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("plan", help="the full recovery plan and every target checked (nothing changes)")
    _targets(a)
    a.set_defaults(func=plan_cmd)
    a = actions.add_parser("run", help="run the automatable steps, verify each, write the controller script")
    _targets(a)
    a.add_argument("--resume", metavar="ID", help="resume recovery ID: what is done and still verifies is skipped")
    a.add_argument("--dry-run", action="store_true", help="every check, no change (like `recover plan`)")
    a.add_argument("--parallel", type=int, default=2, help="databases restored at once (default 2)")
    a.add_argument("--textfile", metavar="FILE", help="write each step's measured seconds to FILE "
                   "(appsvc_dr_recovery_duration_seconds, node_exporter textfile; the estimate is the drill's)")
    a.set_defaults(func=run_cmd)
    for name, func, text in (("status", status_cmd, "progress of a recovery (every recovery without an ID)"),
                             ("report", report_cmd, "the timeline of a recovery: each step's start and duration")):
        a = actions.add_parser(name, help=text)
        a.add_argument("recovery_id", nargs="?" if name == "status" else None, metavar="ID")
        a.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
        a.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "report":
            a.add_argument("--textfile", metavar="FILE", help="also write each step's measured seconds to FILE "
                                   "(appsvc_dr_recovery_duration_seconds)")
        a.set_defaults(func=func)


def _targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stamp", help="stamp (default: APPSVC_DR_STAMP)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--set", dest="set_id", help="backup set id (default: the newest complete set that passed "
                       "a drill, else the newest complete one)")
    which.add_argument("--latest", action="store_true", help="the newest complete set, drilled or not")
    p.add_argument("--database-server", help="restore the databases to this server (default: "
                   "APPSVC_DR_DATABASE__SERVER)")
    p.add_argument("--data-path", help="SQL Server: MOVE data files to this directory on the server (default: the "
                   "backup's own paths, as `restore database` in place)")
    p.add_argument("--log-path", help="SQL Server: MOVE log files to this directory (default: --data-path, else the "
                   "backup's own paths)")
    p.add_argument("--fileshare-target", help=r"\\server\share[\dir] (or a local directory) for the content")
    p.add_argument("--fileshare-username", help="SMB user (default: APPSVC_DR_FILESHARE__USERNAME)")
    p.add_argument("--fileshare-password-env", metavar="VAR", help="environment variable holding its password "
                   "(default: APPSVC_DR_FILESHARE__PASSWORD)")
    p.add_argument("--fileshare-port", type=int, help="SMB port (default: APPSVC_DR_FILESHARE__PORT)")
    p.add_argument("--secrets-out", type=Path, help="where SystemSecrets.json is written (mode 0600)")
    p.add_argument("--out-dir", type=Path, help="where the controller script and checklist go (default: .)")
    p.add_argument("--override-database-server", help="Restore-AppServiceStamp -OverrideDatabaseServer (the "
                   "restored SQL Server's new address)")
    p.add_argument("--override-content-share", help="Restore-AppServiceStamp -OverrideContentShare (the restored "
                   "share's new address)")
    p.add_argument("--controller-secrets-path", help=r"SystemSecrets.json on CN0-VM (default "
                   r"C:\AppServiceRecovery\SystemSecrets.json)")
    p.add_argument("--hosting-vss", action="store_true", help="App Service before 1.5: also stop and start "
                   "HostingVssService")
    p.add_argument("--skip", help="comma-separated components not to recover: secrets,databases,fileshare")
    p.add_argument("--force", action="store_true", help="restore over non-empty databases / share / secrets file")
    add_override_flags(p)              # kept in the state file for --resume
    add_key_options(p)


def _build_targets(args: argparse.Namespace, settings: Settings, saved: dict | None = None):
    from workers.recover.model import CONTROLLER_SECRETS, Targets

    saved, s = saved or {}, settings.fileshare

    def pick(name: str, default=None):
        value = getattr(args, name, None)
        return value if value not in (None, False) else saved.get(name, default)
    password = s.password.get_secret_value() if s.password is not None else None
    if args.fileshare_password_env:
        if args.fileshare_password_env not in os.environ:
            raise ConfigurationError(f"environment variable {args.fileshare_password_env} is not set",
                                     hint=f"export {args.fileshare_password_env}=... (the share password).")
        password = os.environ[args.fileshare_password_env]
    skip = tuple(comma_list(args.skip)) if args.skip else tuple(saved.get("skip", ()))
    unknown = set(skip) - {"secrets", "databases", "fileshare"}
    if unknown:
        raise ConfigurationError(f"unknown component(s) in --skip: {', '.join(sorted(unknown))}",
                                 hint="--skip takes secrets, databases, fileshare.")
    out = pick("secrets_out")
    out_dir = pick("out_dir")
    return Targets(database_server=pick("database_server"), fileshare=pick("fileshare_target") or
                   saved.get("fileshare"), fileshare_username=pick("fileshare_username", s.username),
                   fileshare_password=password, fileshare_port=pick("fileshare_port", s.port),
                   fileshare_encrypt=s.encrypt, secrets_out=Path(out) if out else None,
                   out_dir=Path(out_dir) if out_dir else None,
                   override_database_server=pick("override_database_server"),
                   override_content_share=pick("override_content_share"),
                   controller_secrets=pick("controller_secrets_path") or saved.get("controller_secrets") or
                   CONTROLLER_SECRETS, hosting_vss=bool(pick("hosting_vss", False)), skip=skip,
                   data_path=pick("data_path"), log_path=pick("log_path"), database=_flags(args, saved))


def _flags(args: argparse.Namespace, saved: dict):
    """The database overrides: given now, or kept by the recovery being resumed (a flag is never dropped on
    --resume: the recovery goes on the way it started)."""
    from workers.recover.model import DatabaseFlags

    before = DatabaseFlags.from_json(saved.get("database_flags"))
    return DatabaseFlags(**{k: bool(getattr(args, k, False)) or getattr(before, k)
                            for k in DatabaseFlags.__dataclass_fields__})


def _with_server(settings: Settings, server: str | None) -> Settings:
    """The database section aimed at the restore server given on the command line (or kept by the recovery)."""
    if not server:
        return settings
    return settings.model_copy(update={"database": settings.database.model_copy(update={"server": server})})


def _print_prepared(prepared, stamp: str, targets) -> None:
    from workers.recover import plan as planning

    c = prepared.choice
    print(f"recovery of {stamp} from backup set {c.state.set_id}: {c.reason}\n")
    print("\n".join(planning.lines(prepared.steps, targets.database)))
    print("\nchecked:")
    for note in prepared.findings.notes:
        print(f"  ok    {note}")
    if prepared.findings.problems:
        print(f"\n{len(prepared.findings.problems)} problem(s) to fix before recovering:")
        for n, p in enumerate(prepared.findings.problems, 1):
            print(f"  {n}. {p.what}\n     how to fix: {p.fix}")


def plan_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from workers.recover.prepare import prepare

    stamp = args.stamp or settings.stamp
    targets = _build_targets(args, settings)
    settings = _with_server(settings, targets.database_server)
    prepared = prepare(settings, artifact_store(settings), keyring_from_args(args, required=True), stamp, targets,
                       set_id=args.set_id, latest=args.latest, force=args.force)
    _print_prepared(prepared, stamp, targets)
    if prepared.findings.problems:
        return 1
    print("\nevery target is ready: `appsvc-dr recover run` with the same options restores the stamp")
    return 0


def run_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from workers.cli.run_cmd import private_umask
    from workers.recover import state as st
    from workers.recover.metrics import write_textfile
    from workers.recover.prepare import prepare
    from workers.recover.run import Runner
    from workers.storage.signing import trust_of

    private_umask()                     # the staged dumps and SystemSecrets.json are plaintext
    stamp, store = args.stamp or settings.stamp, artifact_store(settings)
    recovery = st.load(store.backend, stamp, args.resume) if args.resume else None
    if recovery is not None and args.set_id and args.set_id != recovery.set_id:
        raise ConfigurationError(f"recovery {recovery.recovery_id} restores set {recovery.set_id}, not {args.set_id}",
                                 hint="Leave out --set when resuming, or start a new recovery for the other set.")
    targets = _build_targets(args, settings, recovery.targets if recovery else None)
    settings = _with_server(settings, targets.database_server)
    keys = keyring_from_args(args, required=True)
    prepared = prepare(settings, store, keys, stamp, targets, set_id=args.set_id, latest=args.latest,
                       force=args.force, recovery=recovery)
    _print_prepared(prepared, stamp, targets)
    if prepared.findings.problems:
        print("\nnothing was changed." + (f" Fix the above, then `recover run --resume {recovery.recovery_id}`."
                                          if recovery else ""))
        return 1
    if args.dry_run:
        print("\ndry run: every check passed, nothing was changed")
        return 0
    if recovery is None:
        recovery = st.Recovery(st.new_id(), stamp, prepared.choice.state.set_id, st.now(), targets.to_json(),
                               [st.StepState(s.step_id, s.kind) for s in prepared.steps])
    recovery.targets = targets.to_json()
    key = st.save(store.backend, recovery)
    print(f"\nrecovery {recovery.recovery_id} (state: {key})")
    if trust_of(store.backend).signer is None:
        print("WARNING: no signing key is configured (APPSVC_DR_ENCRYPTION__SIGNING_KEY): the state is stored "
              "unsigned and `recover run --resume` will refuse it")
    Runner(settings, store, keys, prepared.contents, targets, recovery, prepared.steps, force=args.force,
           parallel=args.parallel).run()
    if args.textfile:
        write_textfile(args.textfile, recovery)
    print("")
    print("\n".join(_status_lines(recovery)))
    return 0 if recovery.finished_at else 1


def _status_lines(recovery) -> list[str]:
    from workers.recover.model import DatabaseFlags, seconds_text
    from workers.recover.state import DONE, MANUAL

    w = max(len(s.step_id) for s in recovery.steps)
    flags = DatabaseFlags.from_json(recovery.targets.get("database_flags")).names()
    lines = [f"recovery {recovery.recovery_id} of {recovery.stamp}/{recovery.set_id} (started {recovery.created_at})"
             + (f"; database overrides: {', '.join(flags)}" if flags else ""),
             f"{'step':{w}} {'status':8} {'runs':>4} {'seconds':>9}  detail"]
    for s in recovery.steps:
        text = s.detail if s.status != "failed" else f"{s.error} — how to fix: {s.hint}"
        secs = "-" if s.seconds is None else f"{s.seconds:.1f}"
        lines.append(f"{s.step_id:{w}} {s.status:8} {s.runs:>4} {secs:>9}  {text}")
    todo = [s.step_id for s in recovery.steps if s.status not in (DONE, MANUAL)]
    if todo:
        lines.append(f"\nnot done: {', '.join(todo)}: fix what is listed, then `appsvc-dr recover run --resume "
                     f"{recovery.recovery_id}`")
    else:
        from workers.recover.metrics import total_seconds
        lines.append(f"\nautomated steps done in {seconds_text(total_seconds(recovery))}; the manual steps are in "
                     "the checklist next to the controller script")
    return lines


def status_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from workers.recover import state as st

    stamp, store = args.stamp or settings.stamp, artifact_store(settings)
    if not args.recovery_id:
        ids = st.list_ids(store.backend, stamp)
        print("\n".join(ids) if ids else f"no recovery of stamp {stamp}")
        return 0
    recovery = st.load(store.backend, stamp, args.recovery_id)
    print(json.dumps(recovery.to_json(), indent=2) if args.json else "\n".join(_status_lines(recovery)))
    return 0 if recovery.finished_at else 1


def report_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from workers.drill.results import read_markers
    from workers.recover import state as st
    from workers.recover.choose import estimated_rto
    from workers.recover.metrics import total_seconds, write_textfile

    stamp, store = args.stamp or settings.stamp, artifact_store(settings)
    recovery = st.load(store.backend, stamp, args.recovery_id)
    estimated = estimated_rto(read_markers(store.backend, stamp))
    if args.textfile:
        write_textfile(args.textfile, recovery)
    rows = [{"step": s.step_id, "status": s.status, "started_at": s.started_at, "finished_at": s.finished_at,
             "seconds": s.seconds, "runs": s.runs} for s in recovery.steps]
    if args.json:
        print(json.dumps({"recovery_id": recovery.recovery_id, "steps": rows, "total_seconds":
                          total_seconds(recovery), "estimated_rto_seconds": estimated}, indent=2))
        return 0
    print(f"timeline of recovery {recovery.recovery_id} ({recovery.stamp}/{recovery.set_id}), started "
          f"{recovery.created_at}")
    print(f"{'started (UTC)':24} {'finished (UTC)':24} {'seconds':>9} {'runs':>4}  step")
    for r in sorted(rows, key=lambda r: r["started_at"] or "~"):
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        print(f"{(r['started_at'] or '-')[:23]:24} {(r['finished_at'] or '-')[:23]:24} {secs:>9} {r['runs']:>4}  "
              f"{r['step']} ({r['status']})")
    total = total_seconds(recovery)
    print(f"\nmeasured RTO of the automated steps: {'-' if total is None else f'{total:.1f}s'}; estimated by the "
          f"newest drill: {'unknown' if estimated is None else f'{estimated:.1f}s'}")
    return 0
