"""The ``functions`` worker: copies the storage accounts Function Apps depend on (blobs, queues, tables)."""
