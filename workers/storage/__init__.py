"""Storage backends and the artifact format (zstd + AES-256-GCM segments, certificate-wrapped key).

The storage interface: :class:`StorageBackend` (put / open / stat / list / delete / exists) with the
backends in ``local``, ``s3`` (minio) and ``smb`` (smbprotocol), chosen by :func:`build_store`. Nothing
outside this package imports minio or smbprotocol.
"""
from workers.storage.base import (InvalidArgument, ObjectInfo, ObjectNotFound, StorageBackend, StorageError,
                                  StorageFull, StorageMisconfigured, StoragePermissionDenied, StorageUnavailable,
                                  validate_key)
from workers.storage.factory import build_store

__all__ = ["InvalidArgument", "ObjectInfo", "ObjectNotFound", "StorageBackend", "StorageError", "StorageFull",
           "StorageMisconfigured", "StoragePermissionDenied", "StorageUnavailable", "build_store", "validate_key"]
