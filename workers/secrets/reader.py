"""Read and check a dropped SystemSecrets.json without ever echoing its contents."""
from __future__ import annotations

import hashlib
import json

from workers.runtime.errors import PermanentError
from workers.storage.base import ObjectNotFound, StorageBackend

HINT_EXPORT = ("Download the secrets again in the Azure Stack Hub administrator portal (App Service → Secrets → "
               "Download Secrets) and run `appsvc-dr publish secrets-rotated --file SystemSecrets.json`.")


class BadSecretsFile(PermanentError):
    """The dropped file is not a usable SystemSecrets.json. Messages never contain the file's contents."""


def _text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


def read_secrets(backend: StorageBackend, key: str, path: str, max_size: int) -> tuple[bytes, str]:
    """The file's bytes and SHA-256 fingerprint, after checking it is a non-empty JSON object."""
    try:
        size = backend.stat(key).size
    except ObjectNotFound:
        raise BadSecretsFile(f"SystemSecrets.json not found at {path}",
                             hint="Check the drop path in the event and that the file was copied before the event "
                                  "was published. " + HINT_EXPORT) from None
    if size == 0:
        raise BadSecretsFile(f"{path} is empty", hint=HINT_EXPORT)
    if size > max_size:
        raise BadSecretsFile(f"{path} is {size} bytes, over the {max_size}-byte limit for a secrets file",
                             hint="Check that the right file was dropped, or raise APPSVC_DR_SECRETS__MAX_SIZE.")
    with backend.open(key) as stream:
        data = stream.read(max_size + 1)
    if len(data) > max_size:
        raise BadSecretsFile(f"{path} grew past the {max_size}-byte limit while being read", hint=HINT_EXPORT)
    try:
        parsed = json.loads(_text(data))
    except UnicodeDecodeError:
        raise BadSecretsFile(f"{path} is not UTF-8 or UTF-16 text", hint=HINT_EXPORT) from None
    except json.JSONDecodeError as exc:
        raise BadSecretsFile(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno})",
                             hint=HINT_EXPORT) from None
    except RecursionError:
        raise BadSecretsFile(f"{path} nests JSON arrays/objects deeper than the parser allows: not a "
                             "SystemSecrets.json export", hint=HINT_EXPORT) from None
    if not isinstance(parsed, dict) or not parsed:
        kind = "an empty JSON object" if parsed == {} else f"JSON {type(parsed).__name__}, not an object"
        raise BadSecretsFile(f"{path} is {kind}", hint=HINT_EXPORT)
    return data, hashlib.sha256(data).hexdigest()
