"""The file-share snapshot repository and its format: packs and the packer that fills them, the blob index,
manifests, snapshot records, locks, forget by policy, prune and repack, the restore's pack cache, and its path
rules. A library under the workers, shared by the fileshare worker, the catalog's retention and the CLI."""
