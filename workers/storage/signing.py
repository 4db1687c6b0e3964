"""Authenticity of stored objects: Ed25519 signatures made by the workers, checked by readers.

Encryption uses the certificate's *public* key, so anyone who has it can write a valid encrypted artifact:
encryption proves nothing about who wrote an object. Workers therefore hold a signing key (Ed25519, PEM,
0600) and sign everything they store; readers check against one or more public verify keys.

One mechanism for every object: a signature covers ``"appsvc-dr sig v1\\n" || store key || "\\n" ||
SHA-256 digest`` so a genuine object cannot be moved to another key (an old secrets version renamed as the
newest). What the digest is depends on the object:

* an artifact's record (``KEY.record.json``): SHA-256 of the canonical JSON of the record, which holds the
  artifact key, the plaintext size and SHA-256 and the SHA-256 of every stored byte (header, segments and
  trailer). The artifact itself is thereby signed without buffering it: the signature is made from hashes the
  encoder computed anyway, once the stream has ended;
* a JSON object (plan, completion marker, skip note, drill result, record): SHA-256 of its canonical JSON
  (``sort_keys``, compact separators) without the ``signature`` member, which holds the signature;
* an index object: its id, the SHA-256 of its unsigned body.

A signature is ``{"alg": "ed25519", "key_id": HEX, "sig": BASE64}``; ``key_id`` is the SHA-256 of the raw
public key, so after a rotation readers pick the right verify key among several.

Migration: a worker without a signing key writes unsigned objects (and warns at start); a reader with no
verify key configured reads as before unless the read is one that must be signed (a restore with a private
key, secrets), where it refuses with a hint to configure one. ``allow_unsigned`` (``--allow-unsigned``)
reads a legacy unsigned object with a WARNING.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from workers.runtime.errors import ConfigurationError, PermanentError
from workers.storage.settings import EncryptionSettings

log = logging.getLogger("appsvc_dr.signing")
ALG = "ed25519"
DOMAIN = b"appsvc-dr sig v1\n"
SIGNATURE_FIELD = "signature"
_SETTING_HINT = ("Set APPSVC_DR_ENCRYPTION__VERIFY_KEYS to the workers' public verify key(s) (comma-separated PEM "
                 "paths; `appsvc-dr keys create-signing` makes a pair).")
_LEGACY_HINT = ("If this is a legacy object written before signing was enabled and you trust it, re-run with "
                "--allow-unsigned (or APPSVC_DR_ENCRYPTION__ALLOW_UNSIGNED=true); otherwise restore another set "
                "and find out who can write to the store.")


class SignatureError(PermanentError):
    """An object is unsigned, signed by an unknown key, or its signature does not match."""

    default_hint = ("The object was not written by a worker holding the signing key, or was altered or moved: "
                    "restore from another backup set and check who can write to the store.")


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _read(path: Path | str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PermanentError(f"cannot read {what} {path}: {exc.strerror or exc}",
                             hint="Check the path and the file's permissions.") from None


@dataclass(frozen=True)
class Signer:
    """The workers' private signing key."""

    private_key: Ed25519PrivateKey = field(repr=False)
    key_id: str

    @classmethod
    def load(cls, path: Path | str) -> "Signer":
        try:
            key = serialization.load_pem_private_key(_read(path, "signing key"), None)
        except (ValueError, TypeError):
            raise PermanentError(f"signing key {path} is not an unencrypted PEM private key",
                                 hint="Point APPSVC_DR_ENCRYPTION__SIGNING_KEY at the private key written by "
                                      "`appsvc-dr keys create-signing`.") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise PermanentError(f"signing key {path} is not an Ed25519 key",
                                 hint="Make one with `appsvc-dr keys create-signing`.")
        return cls(key, key_id(key.public_key()))

    def sign(self, store_key: str, digest: bytes) -> dict[str, str]:
        sig = self.private_key.sign(_message(store_key, digest))
        return {"alg": ALG, "key_id": self.key_id, "sig": base64.b64encode(sig).decode("ascii")}


def load_verify_key(path: Path | str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(_read(path, "verify key"))
    except ValueError:
        raise PermanentError(f"verify key {path} is not a PEM public key", hint=_SETTING_HINT) from None
    if not isinstance(key, Ed25519PublicKey):
        raise PermanentError(f"verify key {path} is not an Ed25519 public key", hint=_SETTING_HINT)
    return key


def _message(store_key: str, digest: bytes) -> bytes:
    return DOMAIN + store_key.encode("utf-8") + b"\n" + digest


def canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in data.items() if k != SIGNATURE_FIELD}, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class Trust:
    """Who signs what this process writes, and which signatures it accepts on what it reads."""

    signer: Signer | None = None
    verify_keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict, repr=False)
    allow_unsigned: bool = False
    required: bool = False          # every read must be signed even without a verify key (operator restores)

    @classmethod
    def from_files(cls, signing_key: Path | str | None = None, verify_keys: Iterable[Path | str] = (), *,
                   allow_unsigned: bool = False, required: bool = False) -> "Trust":
        keys = {key_id(k): k for k in map(load_verify_key, verify_keys)}
        signer = Signer.load(signing_key) if signing_key else None
        return cls(signer, keys, allow_unsigned, required)

    @property
    def verifies(self) -> bool:
        return bool(self.verify_keys) or self.required

    def sign(self, store_key: str, digest: bytes) -> dict[str, str] | None:
        return self.signer.sign(store_key, digest) if self.signer is not None else None

    def check(self, store_key: str, digest: bytes, signature: Any, *, what: str, required: bool = False) -> bool:
        """Raise SignatureError unless ``signature`` is a valid signature of ``digest`` at ``store_key`` by a
        configured verify key. True when verified; False when accepted unverified (no verify key and not
        required — legacy — or ``allow_unsigned``, logged at WARNING)."""
        if not (required or self.verifies):
            return False
        if signature is None:
            return self._legacy(f"{what} ({store_key}) is not signed", _LEGACY_HINT)
        if not self.verify_keys:
            return self._legacy(f"cannot check the signature of {what} ({store_key}): no verify key is "
                                "configured", _SETTING_HINT)
        try:
            kid, raw = str(signature["key_id"]), base64.b64decode(signature["sig"], validate=True)
            if signature.get("alg") != ALG:
                raise ValueError
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SignatureError(f"{what} ({store_key}) carries a malformed signature") from None
        public = self.verify_keys.get(kid)
        if public is None:
            raise SignatureError(
                f"{what} ({store_key}) is signed by unknown key {kid[:16]}; verify keys configured: "
                f"{', '.join(k[:16] for k in self.verify_keys)}",
                hint="If the key is yours (an older signing key after a rotation), add its public key to "
                     "APPSVC_DR_ENCRYPTION__VERIFY_KEYS; otherwise the object is forged: restore another set.")
        try:
            public.verify(raw, _message(store_key, digest))
        except InvalidSignature:
            raise SignatureError(f"{what} ({store_key}): the signature by key {kid[:16]} does not match: the "
                                 "object was forged, altered or moved from another key") from None
        return True

    def _legacy(self, message: str, hint: str) -> bool:
        if not self.allow_unsigned:
            raise SignatureError(message, hint=hint)
        log.warning("%s; read anyway (unsigned objects allowed)", message)
        return False

    # ---- JSON objects ----------------------------------------------------------------------------
    def sign_json(self, store_key: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with a ``signature`` member (unchanged without a signing key)."""
        out = {k: v for k, v in data.items() if k != SIGNATURE_FIELD}
        signature = self.sign(store_key, hashlib.sha256(canonical(out)).digest())
        if signature is not None:
            out[SIGNATURE_FIELD] = signature
        return out

    def verify_json(self, store_key: str, data: Mapping[str, Any], *, what: str,
                    required: bool = False) -> dict[str, Any]:
        """``data`` without its ``signature`` member, once the signature is checked."""
        self.check(store_key, hashlib.sha256(canonical(data)).digest(), data.get(SIGNATURE_FIELD), what=what,
                   required=required)
        return {k: v for k, v in data.items() if k != SIGNATURE_FIELD}


def sign_body(backend: Any, store_key: str, body: bytes) -> bytes:
    """A JSON object's bytes with a ``signature`` member added by the backend's Trust (unchanged without a
    signing key). Written as ``indent=2, sort_keys`` like the catalog's other JSON files."""
    trust = trust_of(backend)
    if trust.signer is None:
        return body
    return json.dumps(trust.sign_json(store_key, json.loads(body)), indent=2, sort_keys=True).encode()


def verified(backend: Any, store_key: str, data: dict[str, Any], what: str) -> dict[str, Any] | None:
    """``data`` without its signature once the backend's Trust accepts it; None (logged at WARNING) when it
    is unsigned, forged or moved and verify keys are configured: such an object is treated as absent."""
    try:
        return trust_of(backend).verify_json(store_key, data, what=what)
    except SignatureError as exc:
        log.warning("ignoring %s: %s", store_key, exc.message)
        return None


def trust_of(backend: Any) -> Trust:
    """The trust policy the composition attached to a storage backend (none: sign nothing, check nothing)."""
    return getattr(backend, "trust", None) or Trust()


def attach(backend: Any, trust: Trust) -> Any:
    """Attach ``trust`` to ``backend`` (everything writing or reading through it signs / verifies)."""
    backend.trust = trust
    return backend


def generate_signing_key() -> tuple[bytes, bytes, str]:
    """A new Ed25519 pair: (private key PEM, public verify key PEM, key id)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public, key_id(key.public_key())


def trust_from_settings(encryption: EncryptionSettings, *, allow_unsigned: bool = False) -> Trust:
    """The Trust of the encryption section (signing key, verify keys, allow_unsigned); a key file that cannot
    be used stops the process at start with a ConfigurationError."""
    try:
        return Trust.from_files(encryption.signing_key, encryption.verify_keys,
                                allow_unsigned=allow_unsigned or encryption.allow_unsigned)
    except PermanentError as exc:
        raise ConfigurationError(f"signing: {exc.message}", hint=exc.hint) from None
