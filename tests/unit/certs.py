"""Test helper: self-signed RSA certificates, PEM keys and PFX files generated at test time.

No key material is committed; every run makes fresh keys (2048-bit to keep tests quick). Generation is
cached per name within a test session, so several tests can share the "old" and "new" certificates.
"""
from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TestCert:
    __test__ = False  # not a pytest test class

    name: str
    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def key_pem(self, password: bytes | None = None) -> bytes:
        encryption = (serialization.BestAvailableEncryption(password) if password
                      else serialization.NoEncryption())
        return self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              encryption)

    def write(self, directory) -> tuple:
        """``directory/cert.pem`` and an unencrypted ``directory/key.pem``; returns both paths."""
        cert, key = directory / "cert.pem", directory / "key.pem"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem())
        return cert, key

    def pfx(self, password: bytes | None) -> bytes:
        encryption = (serialization.BestAvailableEncryption(password) if password
                      else serialization.NoEncryption())
        return pkcs12.serialize_key_and_certificates(self.name.encode(), self.private_key, self.certificate,
                                                     None, encryption)


def _self_signed(name: str, key) -> x509.Certificate:  # type: ignore[no-untyped-def]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))


@functools.lru_cache(maxsize=None)
def make_cert(name: str = "appsvc-dr-test", key_size: int = 2048) -> TestCert:
    """A self-signed RSA certificate with its private key (cached per name and size)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    return TestCert(name, _self_signed(name, key), key)


@functools.lru_cache(maxsize=None)
def make_ec_cert_pem(name: str = "appsvc-dr-ec") -> bytes:
    """A self-signed EC certificate (PEM): not usable for key wrapping."""
    key = ec.generate_private_key(ec.SECP256R1())
    return _self_signed(name, key).public_bytes(serialization.Encoding.PEM)


@functools.lru_cache(maxsize=None)
def make_signing_key(name: str = "appsvc-dr-signing") -> tuple[bytes, bytes]:
    """A fresh Ed25519 signing key pair (cached per name): (private PEM, public verify PEM)."""
    from workers.storage.signing import generate_signing_key
    private, public, _kid = generate_signing_key()
    return private, public


def write_signing(directory, name: str = "appsvc-dr-signing") -> tuple:
    """``directory/signing.pem`` (0600) and ``directory/verify.pem``; returns both paths."""
    private, public = make_signing_key(name)
    key, pub = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    key.write_bytes(private)
    key.chmod(0o600)
    pub.write_bytes(public)
    return key, pub


def signing_settings(directory, name: str = "appsvc-dr-signing") -> dict:
    """The ``encryption`` settings fields for a worker that signs and verifies with the test key."""
    key, pub = write_signing(directory, name)
    return {"signing_key": str(key), "verify_keys": [str(pub)]}


def signed(backend, directory, *, signer: str | None = "appsvc-dr-signing",
           verify: tuple[str, ...] = ("appsvc-dr-signing",), allow_unsigned: bool = False):
    """``backend`` with a Trust attached: signs with ``signer``'s key, accepts ``verify`` keys' signatures."""
    from workers.storage.signing import Trust, attach
    key = write_signing(directory, signer)[0] if signer else None
    return attach(backend, Trust.from_files(key, [write_signing(directory, v)[1] for v in verify],
                                            allow_unsigned=allow_unsigned))
