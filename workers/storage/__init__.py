"""Storage backends and the artifact format (zstd + AES-256-GCM segments, certificate-wrapped key).

The storage interface: :class:`StorageBackend` (put / open / stat / list / delete / exists / close) with the
backends in ``local``, ``s3`` (minio) and ``smb`` (smbprotocol, through the shared ``workers.smb`` library),
chosen by :func:`build_store`. Nothing above the storage interface imports minio or smbprotocol (the file-share
tree speaks SMB itself, through ``workers.smb`` too).
"""
from workers.storage.base import (InvalidArgument, ObjectInfo, ObjectNotFound, StorageBackend, StorageError,
                                  StorageFull, StorageMisconfigured, StoragePermissionDenied, StorageUnavailable,
                                  validate_key)
from workers.storage.factory import build_store

__all__ = ["InvalidArgument", "ObjectInfo", "ObjectNotFound", "StorageBackend", "StorageError", "StorageFull",
           "StorageMisconfigured", "StoragePermissionDenied", "StorageUnavailable", "build_store", "validate_key"]
