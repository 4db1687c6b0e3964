"""Certificates and private keys for artifact encryption.

Artifacts are encrypted for an X.509 certificate (public part only on the backup side, like Azure Stack Hub
infrastructure backup); restores open them with a :class:`KeyRing` of private keys (PEM or PFX). The
header of an artifact names the certificate by thumbprint, so a key ring holding both the old and the new
key opens artifacts from before and after a certificate rotation. Error messages name files and
thumbprints, never key material or passwords.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import Certificate
from cryptography.x509.oid import NameOID

from workers.runtime.errors import PermanentError

Source = Union[str, "os.PathLike[str]", bytes]
Password = Union[str, bytes, Any, None]  # Any: a pydantic SecretStr / SecretBytes
MIN_RSA_BITS = 2048


class KeyLoadError(PermanentError):
    """A certificate or key file cannot be read or used."""

    default_hint = ("Pass a readable PEM/DER certificate (.cer/.pem) for backups and its private key as PEM "
                    "(--key) or PFX/PKCS#12 (--pfx) for restores; `appsvc-dr keys create` makes a new pair.")


class WrongPasswordError(KeyLoadError):
    """A password-protected key file was given no password or the wrong one."""

    default_hint = ("Check the password for this key file (--key-password / --pfx-password, or the secret "
                    "they are read from); re-export the PFX if the password is lost.")


class KeyNotFoundError(PermanentError):
    """No private key in the key ring belongs to the certificate an artifact was encrypted for."""

    def __init__(self, thumbprint: str, *, subject: str | None = None, available: Iterable[str] = ()) -> None:
        have = ", ".join(available) or "none"
        who = f" ({subject})" if subject else ""
        super().__init__(
            f"no private key for certificate thumbprint {thumbprint}{who}; keys loaded: {have}",
            hint=(f"Pass the private key of the certificate with thumbprint {thumbprint} via --key (PEM) or "
                  f"--pfx (PKCS#12); after a certificate rotation keep the old key in the key ring."))
        self.thumbprint = thumbprint


def thumbprint(cert: Certificate, algorithm: str = "sha1") -> str:
    """The certificate thumbprint as Windows shows it: upper-case hex of the DER hash (SHA-1 by default)."""
    algo = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}[algorithm.lower()]
    return cert.fingerprint(algo).hex().upper()


def spki_sha256(public_key: rsa.RSAPublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo: identifies a key pair even without its certificate."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest().upper()


def normalize_thumbprint(value: str) -> str:
    return "".join(ch for ch in value if ch not in " :-\u200e").upper()


def _read(source: Source, what: str) -> tuple[bytes, str]:
    """Returns (content, label for messages). bytes are content; str/PathLike are paths (or inline PEM)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), f"<{what} bytes>"
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode("ascii", "replace"), f"<{what} PEM>"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise KeyLoadError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None


def _password(password: Password) -> bytes | None:
    if password is None:
        return None
    if hasattr(password, "get_secret_value"):
        password = password.get_secret_value()
    return password.encode("utf-8") if isinstance(password, str) else bytes(password)


def check_rsa(public_key: Any, label: str) -> None:
    """Raise KeyLoadError unless ``public_key`` is an RSA key of at least MIN_RSA_BITS."""
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise KeyLoadError(f"{label}: only RSA keys are supported (got {type(public_key).__name__})")
    if public_key.key_size < MIN_RSA_BITS:
        raise KeyLoadError(f"{label}: RSA key of {public_key.key_size} bits is too small "
                           f"(at least {MIN_RSA_BITS} required)")


def load_certificate(source: Source) -> Certificate:
    """Load an X.509 certificate (PEM or DER; a path, inline PEM text, or bytes). Must hold an RSA key."""
    data, label = _read(source, "certificate")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            cert = x509.load_pem_x509_certificates(data)[0]
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError:
        raise KeyLoadError(f"{label} is not a PEM or DER X.509 certificate") from None
    check_rsa(cert.public_key(), label)
    return cert


def load_private_key(source: Source, password: Password = None) -> tuple[rsa.RSAPrivateKey, list[Certificate]]:
    """Load an RSA private key from PEM (optionally encrypted). Returns the key and any certificates that
    the same PEM file holds (a combined cert+key file)."""
    data, label = _read(source, "key")
    pw = _password(password)
    try:
        try:
            key = serialization.load_pem_private_key(data, pw)
        except TypeError:
            if pw is None:
                raise WrongPasswordError(f"key file {label} is password-protected and no password was given")
            key = serialization.load_pem_private_key(data, None)  # a password for a key that has none
    except ValueError:
        if pw is not None and b"ENCRYPTED" in data:
            raise WrongPasswordError(f"wrong password for key file {label}") from None
        raise KeyLoadError(f"{label} is not a PEM private key (for a .pfx/.p12 file use --pfx)") from None
    check_rsa(key.public_key(), label)
    certs = x509.load_pem_x509_certificates(data) if b"-----BEGIN CERTIFICATE-----" in data else []
    return key, certs  # type: ignore[return-value]


def load_pfx(source: Source, password: Password) -> tuple[rsa.RSAPrivateKey, Certificate | None]:
    """Load the private key and certificate from a PFX / PKCS#12 file."""
    data, label = _read(source, "PFX")
    pw = _password(password)
    try:
        key, cert, _chain = pkcs12.load_key_and_certificates(data, pw)
    except ValueError as exc:
        if not data.startswith(b"\x30") or "deserialize" in str(exc):
            raise KeyLoadError(f"{label} is not a PFX/PKCS#12 file") from None
        raise WrongPasswordError(f"cannot open PFX file {label}: wrong or missing password") from None
    if key is None:
        raise KeyLoadError(f"PFX file {label} holds no private key (export it with the private key)")
    check_rsa(key.public_key(), label)
    return key, cert  # type: ignore[return-value]


@dataclass(frozen=True)
class KeyEntry:
    private_key: rsa.RSAPrivateKey = field(repr=False)
    certificate: Certificate | None
    spki_sha256: str
    thumbprint_sha1: str | None
    thumbprint_sha256: str | None

    @property
    def name(self) -> str:
        return self.thumbprint_sha1 or f"key:{self.spki_sha256[:16]}"


class KeyRing:
    """Private keys for restores, found by certificate thumbprint (SHA-1 or SHA-256) or public-key hash."""

    def __init__(self) -> None:
        self._entries: list[KeyEntry] = []
        self._index: dict[str, KeyEntry] = {}

    @classmethod
    def from_files(cls, *, keys: Iterable[Source] = (), key_password: Password = None,
                   pfx: Iterable[Source] = (), pfx_password: Password = None) -> "KeyRing":
        ring = cls()
        for source in keys:
            ring.add_pem(source, password=key_password)
        for source in pfx:
            ring.add_pfx(source, password=pfx_password)
        return ring

    def add_key(self, private_key: rsa.RSAPrivateKey, certificate: Certificate | None = None) -> KeyEntry:
        check_rsa(private_key.public_key(), "private key")
        spki = spki_sha256(private_key.public_key())
        if certificate is not None and spki_sha256(certificate.public_key()) != spki:  # type: ignore[arg-type]
            raise KeyLoadError(f"the private key does not belong to certificate {thumbprint(certificate)}")
        for existing in self._entries:
            if existing.spki_sha256 == spki and (certificate is None or existing.certificate == certificate):
                return existing
        entry = KeyEntry(private_key, certificate, spki,
                         thumbprint(certificate) if certificate else None,
                         thumbprint(certificate, "sha256") if certificate else None)
        self._entries.append(entry)
        for ident in (entry.spki_sha256, entry.thumbprint_sha1, entry.thumbprint_sha256):
            if ident:
                self._index.setdefault(ident, entry)
        return entry

    def add_pem(self, source: Source, *, password: Password = None,
                certificate: Source | Certificate | None = None) -> KeyEntry:
        key, certs = load_private_key(source, password)
        if certificate is not None:
            certs = [certificate if isinstance(certificate, Certificate) else load_certificate(certificate)]
        spki = spki_sha256(key.public_key())
        match = next((c for c in certs if spki_sha256(c.public_key()) == spki), None)  # type: ignore[arg-type]
        if certificate is not None and match is None:
            raise KeyLoadError(f"the private key does not belong to certificate {thumbprint(certs[0])}")
        return self.add_key(key, match)

    def add_pfx(self, source: Source, *, password: Password) -> KeyEntry:
        key, cert = load_pfx(source, password)
        return self.add_key(key, cert)

    def find(self, *identifiers: str | None) -> rsa.RSAPrivateKey | None:
        """The first key matching any identifier (thumbprint SHA-1/SHA-256 or public-key SHA-256)."""
        for ident in identifiers:
            entry = self._index.get(normalize_thumbprint(ident)) if ident else None
            if entry is not None:
                return entry.private_key
        return None

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"KeyRing({', '.join(self.names)})"


def generate_self_signed(common_name: str, days: int = 730, *, key_size: int = 3072,
                         password: Password = None) -> tuple[bytes, bytes]:
    """A new self-signed RSA certificate for artifact encryption: (certificate PEM, private key PEM).

    Keep the key PEM offline (or in the restore vault); only the certificate goes to the backup workers.
    With ``password`` the key PEM is encrypted (PKCS#8, best available encryption).
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=True, data_encipherment=True, key_agreement=False,
                                         key_cert_sign=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    pw = _password(password)
    encryption = (serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
