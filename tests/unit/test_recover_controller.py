"""The controller script `recover run` writes for CN0-VM, read back as PowerShell statements: every documented
step in order, the overrides only when given, values quoted so nothing in them runs."""
from __future__ import annotations

import re

import pytest

from workers.recover.controller import ps_quote, script
from workers.recover.model import Targets
from workers.runtime.errors import PermanentError

_CALLS = re.compile(r"^\s*(Start-Transcript|Stop-Transcript|Invoke-Net (?:stop|start) \w+|Restore-AppService\w+.*|"
                    r"Get-AppServiceSite \| Sync-AppServiceObject|Get-AppServiceServerFarm \| Sync-AppServiceObject|"
                    r"\$ready = @\(Get-AppServiceServer)\b", re.M)


def controller_calls(text: str) -> list[str]:
    """The commands of the script in order (``Invoke-Net stop X`` read as ``net stop X``), comments dropped."""
    body = re.sub(r"<#.*?#>", "", text, flags=re.S)
    out = []
    for m in _CALLS.finditer(body):
        call = m.group(1).strip()
        call = re.sub(r"^Invoke-Net ", "net ", call)
        out.append("Get-AppServiceServer" if call.startswith("$ready") else call.split(" -Path")[0])
    return out


def test_every_documented_step_in_order_with_both_overrides_and_the_error_handling():
    text = script(Targets(override_database_server="sql2,1433", override_content_share=r"\\fs2\share"),
                  stamp="s", set_id="x", recovery_id="r")
    assert controller_calls(text) == [
        "Start-Transcript", "net stop WebFarmService", "net stop ResourceMetering",
        "Restore-AppServiceStamp -FilePath $SecretsFile -OverrideDatabaseServer $OverrideDatabaseServer "
        "-OverrideContentShare $OverrideContentShare", "Restore-AppServiceRoles", "net start WebFarmService",
        "net start ResourceMetering", "Get-AppServiceServer", "Get-AppServiceSite | Sync-AppServiceObject",
        "Get-AppServiceServerFarm | Sync-AppServiceObject", "Stop-Transcript"]
    assert "$ErrorActionPreference = 'Stop'" in text and "catch {" in text and "exit 1" in text
    assert "[string]$SecretsFile = 'C:\\AppServiceRecovery\\SystemSecrets.json'" in text
    assert "[string]$OverrideDatabaseServer = 'sql2,1433'" in text and "$ReadyTimeoutMinutes" in text


def test_no_override_given_means_none_passed_and_old_versions_stop_hosting_vss_too():
    text = script(Targets(hosting_vss=True), stamp="s", set_id="x", recovery_id="r")
    calls = controller_calls(text)
    assert "Restore-AppServiceStamp -FilePath $SecretsFile" in calls
    assert calls.index("net stop HostingVssService") < calls.index("Restore-AppServiceStamp -FilePath $SecretsFile")
    assert calls.index("net start HostingVssService") > calls.index("Restore-AppServiceRoles")


def test_values_are_single_quoted_and_control_characters_refused():
    assert ps_quote("a'b $(calc)") == "'a''b $(calc)'"
    text = script(Targets(override_content_share="\\\\fs\\it's $(x)"), stamp="s", set_id="x", recovery_id="r")
    assert "[string]$OverrideContentShare = '\\\\fs\\it''s $(x)'" in text
    with pytest.raises(PermanentError):
        ps_quote("line\nRemove-Item C:\\")
