"""The recovery plan: every step in the documented order with what it restores, its size, where it goes, its
estimated duration (the last passed drill's throughput; else 'unknown') and the manual part."""
from __future__ import annotations

from workers.fileshare.restorereport import REACL
from workers.recover.contents import Contents
from workers.recover.model import (CHECKLIST_NAME, CONTROLLER, DATABASE, FILESHARE, FUNCTIONS, REACL as REACL_STEP,
                                   SCRIPT, SCRIPT_NAME, SECRETS, DatabaseFlags, Step, Targets, seconds_text,
                                   size_text)

FUNCTION_APPS = [
    "Only if Azure Stack Hub storage held Function Apps' storage accounts (it is gone with the stamp):",
    "create a new storage account (Azure Stack Hub or Azure) for each affected Function App,",
    "in each Function App's Configuration set AzureWebJobsStorage and AzureWebJobsDashboard to the new "
    "account's connection string, save,",
    "restart the Function App and check its functions run (Monitor blade / a test invocation).",
]


def _estimate(size: int | None, rate: float | None) -> float | None:
    return round(size / rate, 1) if size is not None and rate else None


def build(contents: Contents, targets: Targets, rates: dict[str, float], server: str) -> list[Step]:
    steps: list[Step] = []
    if "databases" not in targets.skip:
        for a in contents.databases:
            steps.append(Step(f"database:{a.database}", DATABASE, f"database {a.database} ({a.engine})",
                              f"{a.database} on {server}", a.size, _estimate(a.size, rates.get("databases"))))
    if "fileshare" not in targets.skip:
        size = contents.fileshare_size
        files = None if contents.manifest is None else sum(1 for e in contents.manifest.entries if not e.is_dir)
        steps.append(Step(FILESHARE, FILESHARE, f"snapshot {contents.snapshot or '?'} ({files} files)",
                          targets.fileshare or "(no --fileshare-target)", size,
                          _estimate(size, rates.get("fileshare"))))
        steps.append(Step(REACL_STEP, REACL_STEP, "ACLs of the restored content", "the file server", manual=True,
                          instructions=[REACL]))
    if "secrets" not in targets.skip:
        version = (contents.secrets or {}).get("version_id", "?")
        steps.append(Step(SECRETS, SECRETS, f"SystemSecrets.json {version}",
                          f"{targets.secrets_out or '(no --secrets-out)'} (mode 0600)", contents.secrets_size,
                          _estimate(contents.secrets_size, rates.get("secrets"))))
    out = targets.out_dir or "."
    steps.append(Step(SCRIPT, SCRIPT, f"{SCRIPT_NAME} and {CHECKLIST_NAME}", str(out)))
    steps.append(Step(CONTROLLER, CONTROLLER, "App Service roles and configuration", "controller CN0-VM",
                      manual=True, instructions=[
                          "open RDP to CN0-VM in its network security group; sign in as roleadmin,",
                          f"copy SystemSecrets.json to {targets.controller_secrets} and {SCRIPT_NAME} beside it,",
                          f"in an elevated PowerShell: .\\{SCRIPT_NAME} (answer ENTER to the override prompts and "
                          "Y to Sync-AppServiceObject),",
                          "then delete SystemSecrets.json from CN0-VM and close the RDP rule again."]))
    restore = [f"restore the set's copy of storage account {a} into the new account: appsvc-dr restore functions "
               f"--stamp {contents.stamp} --set {contents.set_id} --account {a} --target-connection-string-env VAR "
               "--key private.pem (VAR holds the new account's connection string), then" for a in
               contents.functions_accounts]
    steps.append(Step(FUNCTIONS, FUNCTIONS, "Function Apps' storage", "each affected Function App", manual=True,
                      instructions=[*FUNCTION_APPS[:2], *restore, *FUNCTION_APPS[2:]]))
    return steps


def lines(steps: list[Step], flags: DatabaseFlags | None = None) -> list[str]:
    w = max([len(s.step_id) for s in steps] + [4])
    out = [f"{'#':>2} {'step':{w}} {'what':50} {'size':>10} {'estimate':>9}  destination"]
    for n, s in enumerate(steps, 1):
        est = "manual" if s.manual else seconds_text(s.estimate) if s.size is not None else "-"
        out.append(f"{n:>2} {s.step_id:{w}} {s.what[:50]:50} {size_text(s.size):>10} {est:>9}  {s.destination}")
        for text in s.instructions:
            out.append(f"{'':{w + 4}}manual: {text}")
    known = [s.estimate for s in steps if not s.manual and s.size]
    total = "unknown (no passed drill measured it)" if not known or None in known else seconds_text(sum(known))
    out.append(f"\nestimated duration of the automatable steps: {total} (databases run in parallel where allowed)")
    if flags is not None and any(s.kind == DATABASE for s in steps):
        given = flags.names()
        out.append("database restore overrides: " + (", ".join(given) + " (kept for --resume)" if given else
                   "none (a target in use, a backup of another database or without page checksums is refused)"))
    return out
