"""Build the configured storage backend from :class:`StoreSettings` (the only place that picks one)."""
from __future__ import annotations

from datetime import timedelta

from workers.storage.base import StorageBackend, StorageMisconfigured
from workers.storage.settings import StoreSettings


def build_store(settings: StoreSettings) -> StorageBackend:
    """A backend for ``settings.kind``. Backends connect lazily: this does no I/O."""
    if settings.kind == "local":
        from workers.storage.local import LocalStore
        return LocalStore(settings.local_path)
    if settings.kind == "s3":
        from workers.storage.s3 import S3Store
        return S3Store(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket,
                       region=settings.s3_region, secure=settings.s3_secure,
                       create_bucket=settings.s3_create_bucket, part_size=settings.s3_part_size,
                       lock_mode=settings.s3_object_lock,
                       lock_for=timedelta(days=settings.s3_lock_days) if settings.s3_object_lock else None)
    if settings.kind == "smb":
        from workers.storage.smb import SmbStore
        if not settings.smb_path:
            raise StorageMisconfigured("the SMB store has no path",
                                       hint=r"Set APPSVC_DR_STORE__SMB_PATH to \\host\share\dir.")
        return SmbStore(settings.smb_path, settings.smb_username, settings.smb_password, port=settings.smb_port,
                        encrypt=settings.smb_encrypt)
    raise StorageMisconfigured(f"unknown store kind {settings.kind!r}",
                               hint="Set APPSVC_DR_STORE__KIND to local, s3 or smb.")
