"""The catalog worker: plans, manifests and completion markers of backup sets, and retention."""
from workers.catalog.handler import CatalogHandler, build_catalog_worker

__all__ = ["CatalogHandler", "build_catalog_worker"]
