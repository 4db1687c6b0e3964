"""Throughput of the artifact format, per mode: ``python tests/benchmarks/bench_artifact.py [MiB]``.

Encodes a generated stream (half random, half repetitive text, never held whole) and pipes the encoder
straight into the decoder, so the figure is encode + decode together on one core.
"""
from __future__ import annotations

import os
import sys
import time

from workers.storage.codec import KeyRing, decode, encode, generate_self_signed, load_certificate

MiB = 1 << 20


class Mixed:
    """``size`` bytes in 64 KiB blocks, alternately random and repetitive."""

    def __init__(self, size: int) -> None:
        self.left, self.block = size, 0
        self.text = (b"site=app;db=sql;" * 4096)[:64 * 1024]

    def read(self, size: int = -1) -> bytes:
        n = min(self.left, 64 * 1024, size if size and size > 0 else 64 * 1024)
        self.left -= n
        self.block += 1
        return os.urandom(n) if self.block % 2 else self.text[:n]


def main(mib: int = 256) -> None:
    cert_pem, key_pem = generate_self_signed("appsvc-dr-bench", 1, key_size=3072)
    cert, ring = load_certificate(cert_pem), KeyRing()
    ring.add_pem(key_pem, certificate=cert_pem)
    for name, compress, recipient in (("raw", False, None), ("compressed", True, None),
                                      ("encrypted", False, cert), ("compressed+encrypted", True, cert)):
        started = time.perf_counter()
        encoded = encode(Mixed(mib * MiB), compress=compress, recipient=recipient)
        decoded = decode(encoded, keys=ring)
        while decoded.read(MiB):
            pass
        seconds = time.perf_counter() - started
        ratio = encoded.stored_size / encoded.plaintext_size
        print(f"{name:22s} {mib / seconds:8.1f} MiB/s  stored/plain {ratio:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
