"""The controller script `recover run` writes for CN0-VM, parsed as PowerShell (tests/unit/psast.py: the
tree-sitter PowerShell grammar; no `pwsh` can be installed here) and read back from its syntax tree: no syntax
error, every documented step in order with the overrides, typed parameters with Windows paths, the transcript
started before the work and stopped in `finally`, the wait for a Ready management server bounded by a timeout,
and values quoted so nothing in them runs."""
from __future__ import annotations

import re

import pytest

from tests.unit.psast import commands, errors, inside, parse, string_values, text, walk
from workers.recover.controller import is_windows_path, ps_quote, script
from workers.recover.model import Targets
from workers.runtime.errors import PermanentError

DOCUMENTED = {"Start-Transcript", "Stop-Transcript", "Invoke-Net", "Restore-AppServiceStamp", "Restore-AppServiceRoles",
              "Get-AppServiceServer", "Get-AppServiceSite", "Get-AppServiceServerFarm"}
BOTH = Targets(override_database_server="sql2,1433", override_content_share=r"\\fs2\share")


def controller_calls(source: str) -> list[str]:
    """The documented commands of the script in source order, from its syntax tree (outside function
    definitions): ``Invoke-Net stop X`` read as ``net stop X``, pipelines into Sync-AppServiceObject as
    ``A | Sync-AppServiceObject``, Restore-AppServiceStamp with its arguments. Fails on a syntax error."""
    root = parse(source)
    assert errors(root) == [], "the script is not valid PowerShell"
    out = []
    for c in commands(root):
        if c.name not in DOCUMENTED or inside(c.node, "function_statement"):
            continue
        if c.name == "Invoke-Net":
            out.append(f"net {c.arguments}")
        elif c.name == "Restore-AppServiceStamp":
            out.append(f"{c.name} {c.arguments}")
        elif c.pipeline[1:] == ("Sync-AppServiceObject",):
            out.append(" | ".join(c.pipeline))
        else:
            out.append(c.name)
    return out


def test_every_documented_step_in_order_with_both_overrides_and_the_error_handling():
    source = script(BOTH, stamp="s", set_id="x", recovery_id="r")
    assert controller_calls(source) == [
        "Start-Transcript", "net stop WebFarmService", "net stop ResourceMetering",
        "Restore-AppServiceStamp -FilePath $SecretsFile -OverrideDatabaseServer $OverrideDatabaseServer "
        "-OverrideContentShare $OverrideContentShare", "Restore-AppServiceRoles", "net start WebFarmService",
        "net start ResourceMetering", "Get-AppServiceServer", "Get-AppServiceSite | Sync-AppServiceObject",
        "Get-AppServiceServerFarm | Sync-AppServiceObject", "Stop-Transcript"]
    root = parse(source)
    top = [text(s) for s in root.children if s.type == "statement_list"][0]
    assert top.startswith("$ErrorActionPreference = 'Stop'")
    # And Invoke-Net runs net.exe and fails on any exit code but 0 and 2 (already stopped / started)
    (function,) = [n for n in walk(root) if n.type == "function_statement"]
    inner = [(c.name, c.arguments) for c in commands(function)]
    assert ("net.exe", "$Verb $Service") in inner and "$LASTEXITCODE -ne 2" in text(function)


def test_the_parameters_are_typed_with_windows_paths_and_the_recoverys_values_as_defaults():
    root = parse(script(BOTH, stamp="s", set_id="x", recovery_id="r"))
    params = [n for n in walk(root) if n.type == "script_parameter" and not inside(n, "function_statement")]
    typed = [(text(next(c for c in walk(p) if c.type == "type_literal")), text(next(c for c in p.children
                                                                                   if c.type == "variable")))
             for p in params]
    assert typed == [("[string]", "$SecretsFile"), ("[string]", "$OverrideDatabaseServer"),
                     ("[string]", "$OverrideContentShare"), ("[int]", "$ReadyTimeoutMinutes"),
                     ("[string]", "$TranscriptPath")]
    defaults = {text(next(c for c in p.children if c.type == "variable")): string_values(p) for p in params}
    assert defaults["$SecretsFile"] == [r"C:\AppServiceRecovery\SystemSecrets.json"]
    assert defaults["$TranscriptPath"] == [r"C:\AppServiceRecovery\Restore-AppServiceController.log"]
    assert defaults["$OverrideDatabaseServer"] == ["sql2,1433"] and defaults["$OverrideContentShare"] == [r"\\fs2\share"]
    assert all(is_windows_path(v[0]) for k, v in defaults.items() if k in ("$SecretsFile", "$TranscriptPath"))


def test_the_transcript_is_started_before_the_work_and_stopped_in_finally():
    root = parse(script(BOTH, stamp="s", set_id="x", recovery_id="r"))
    by_name = {c.name: c for c in commands(root)}
    (trying,) = [n for n in walk(root) if n.type == "try_statement"]
    start, stop = by_name["Start-Transcript"], by_name["Stop-Transcript"]
    assert not inside(start.node, "try_statement") and start.node.end_byte < trying.start_byte
    assert inside(stop.node, "finally_clause")
    for step in ("Restore-AppServiceStamp", "Restore-AppServiceRoles", "Sync-AppServiceObject"):
        assert inside(by_name[step].node, "try_statement") and not inside(by_name[step].node, "finally_clause")
    (catch,) = [n for n in walk(root) if n.type == "catch_clause"]
    assert "exit 1" in text(catch)


def test_the_wait_for_a_ready_management_server_has_a_timeout():
    root = parse(script(BOTH, stamp="s", set_id="x", recovery_id="r"))
    (loop,) = [n for n in walk(root) if n.type == "while_statement"]
    names = [c.name for c in commands(loop)]
    assert "Get-AppServiceServer" in names and "Start-Sleep" in names
    # The deadline is set from the timeout parameter before the loop, and passing it throws
    assignment = [n for n in walk(root) if n.type == "assignment_expression" and text(n).startswith("$deadline =")]
    assert assignment and "AddMinutes($ReadyTimeoutMinutes)" in text(assignment[0])
    assert assignment[0].end_byte < loop.start_byte
    checks = [n for n in walk(loop) if n.type == "if_statement" and "-gt $deadline" in text(n)]
    assert checks and text(checks[0]).split("{", 1)[1].strip().startswith("throw")
    # And the loop ends on a Ready management server (break), between the query and the sleep
    assert re.search(r"-eq 'Ready'.*\$ready\.Count -ge 1\) \{ .*break", text(loop))


def test_no_override_given_means_none_passed_and_old_versions_stop_hosting_vss_too():
    calls = controller_calls(script(Targets(hosting_vss=True), stamp="s", set_id="x", recovery_id="r"))
    assert "Restore-AppServiceStamp -FilePath $SecretsFile" in calls
    assert calls.index("net stop HostingVssService") < calls.index("Restore-AppServiceStamp -FilePath $SecretsFile")
    assert calls.index("net start HostingVssService") > calls.index("Restore-AppServiceRoles")


def test_values_are_single_quoted_so_nothing_in_them_runs_and_control_characters_are_refused():
    assert ps_quote("a'b $(calc)") == "'a''b $(calc)'"
    hostile = "\\\\fs\\it's $(Remove-Item C:\\) `n \u2019x"
    root = parse(script(Targets(override_content_share=hostile), stamp="s", set_id="x", recovery_id="r"))
    # The parser reads the whole value back as one verbatim string: no command, no expansion inside it
    assert errors(root) == [] and hostile.replace("\u2019", "'") in [v.replace("\u2019\u2019", "'")
                                                                     for v in string_values(root)]
    assert "Remove-Item" not in [c.name for c in commands(root)]
    with pytest.raises(PermanentError):
        ps_quote("line\nRemove-Item C:\\")


@pytest.mark.parametrize("damage", [
    lambda s: s.replace("finally {", "finally ", 1),                       # an unbalanced brace
    lambda s: s.replace("'Stop'", "'Stop", 1),                             # an unterminated string
    lambda s: s.replace("@(Get-AppServiceServer", "@(Get-AppServiceServer (", 1),   # an unbalanced parenthesis
])
def test_the_parse_check_catches_a_damaged_script(damage):
    # The check has teeth: the generated script with one character wrong is no valid PowerShell
    assert errors(parse(damage(script(BOTH, stamp="s", set_id="x", recovery_id="r"))))


@pytest.mark.parametrize("path, ok", [(r"C:\AppServiceRecovery\SystemSecrets.json", True),
                                      (r"\\cn0-vm\c$\recovery\SystemSecrets.json", True),
                                      ("/tmp/SystemSecrets.json", False), ("SystemSecrets.json", False),
                                      (r"C:relative\x.json", False)])
def test_controller_paths_must_be_windows_paths(path, ok):
    assert is_windows_path(path) is ok


def test_a_linux_controller_path_is_a_plan_problem_before_anything_changes(tmp_path):
    from tests.unit.forge import STAMP
    from workers.recover.contents import Contents
    from workers.recover.preflight import check

    everything = ("databases", "fileshare", "secrets")
    found = check(None, Targets(controller_secrets="/root/SystemSecrets.json", out_dir=tmp_path, skip=everything),
                  Contents(STAMP, "set"))
    assert [p.what for p in found.problems] == ["'/root/SystemSecrets.json' is no absolute Windows path: the "
                                                "controller script runs on CN0-VM (Windows)"]
    assert "--controller-secrets-path" in found.problems[0].fix
    assert not check(None, Targets(out_dir=tmp_path, skip=everything), Contents(STAMP, "set")).problems
