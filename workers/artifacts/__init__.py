"""Artifacts on top of a storage backend: encode (zstd + certificate encryption), store, verify, record."""
