<#
.SYNOPSIS
    Run right after "Download Secrets" in the Azure Stack Hub administrator portal (App Service → Secrets):
    copies SystemSecrets.json to the drop share and publishes a `secrets-rotated` event for appservice-dr.

.DESCRIPTION
    The event carries the file's location, never its contents. The body follows
    contracts/schemas/secrets-rotated.v1.schema.json and is published through the RabbitMQ management HTTP API
    (POST /api/exchanges/{vhost}/{exchange}/publish). The broker answers whether a queue received it; an
    unrouted event is an error (run `appsvc-dr topology declare` or start the secrets worker).
    After the secrets worker stored the encrypted copy it deletes the plaintext file from the share; delete
    the downloaded file from this workstation yourself.

.EXAMPLE
    $cred = Get-Credential   # appsvc-dr-rotation-hook: may publish only secrets-rotated (deploy/README.md, "Broker users")
    .\Publish-SecretsRotated.ps1 -SecretsFile .\SystemSecrets.json -Stamp stamp1 `
        -DropShare \\fileserver\appsvc-dr-drop -RabbitMqUrl https://rabbitmq.contoso.local:15671 -Credential $cred
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $SecretsFile,
    [Parameter(Mandatory)] [ValidatePattern('^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')] [string] $Stamp,
    [Parameter(Mandatory)] [string] $DropShare,
    [Parameter(Mandatory)] [string] $RabbitMqUrl,
    [Parameter(Mandatory)] [pscredential] $Credential,
    [string] $VHost = "/",
    [string] $Exchange = "appsvc-dr",
    [int] $MaxSize = 1048576
)
$ErrorActionPreference = "Stop"

# Check the file without ever printing it: a non-empty JSON object under the size limit.
$item = Get-Item -LiteralPath $SecretsFile
if ($item.Length -eq 0 -or $item.Length -gt $MaxSize) {
    throw "$SecretsFile is $($item.Length) bytes; expected 1..$MaxSize. Download the secrets again."
}
try { $parsed = Get-Content -Raw -LiteralPath $SecretsFile | ConvertFrom-Json } catch {
    throw "$SecretsFile is not valid JSON. Download the secrets again."
}
if ($null -eq $parsed -or $parsed -isnot [pscustomobject] -or @($parsed.PSObject.Properties).Count -eq 0) {
    throw "$SecretsFile is not a non-empty JSON object. Download the secrets again."
}
Remove-Variable parsed

$now = (Get-Date).ToUniversalTime()
$target = Join-Path $DropShare ("SystemSecrets-{0:yyyyMMddTHHmmssfff}Z.json" -f $now)
Copy-Item -LiteralPath $SecretsFile -Destination $target

$stamp8 = [guid]::NewGuid().ToString("N").Substring(0, 8)
$event = [ordered]@{
    event_id       = [guid]::NewGuid().ToString()
    type           = "secrets-rotated"
    version        = 1
    occurred_at    = $now.ToString("o")
    source         = "hook:Publish-SecretsRotated.ps1"
    stamp          = $Stamp
    correlation_id = ("{0:yyyyMMddTHHmmss}Z-{1}" -f $now, $stamp8)
    causation_id   = $null
    payload        = [ordered]@{
        drop_path  = $target
        rotated_by = "$env:USERDOMAIN\$env:USERNAME"
        rotated_at = $now.ToString("o")
    }
}
$body = [ordered]@{
    properties       = [ordered]@{
        delivery_mode = 2
        content_type  = "application/json"
        message_id    = $event.event_id
        type          = "secrets-rotated"
        headers       = @{ "x-dr-version" = 1 }
    }
    routing_key      = "secrets-rotated"
    payload          = ($event | ConvertTo-Json -Depth 5 -Compress)
    payload_encoding = "string"
} | ConvertTo-Json -Depth 6

$uri = "{0}/api/exchanges/{1}/{2}/publish" -f $RabbitMqUrl.TrimEnd('/'), [uri]::EscapeDataString($VHost), $Exchange
$answer = Invoke-RestMethod -Method Post -Uri $uri -Credential $Credential -Body $body -ContentType "application/json"
if (-not $answer.routed) {
    throw "RabbitMQ did not route the event: no queue is bound for secrets-rotated. Run 'appsvc-dr topology declare' or start the secrets worker. The file stays at $target."
}
Write-Host "published secrets-rotated $($event.event_id) for stamp $Stamp; file dropped at $target"
