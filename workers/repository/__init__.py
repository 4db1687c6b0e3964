"""The file-share snapshot repository (packs, indexes, manifests, snapshot records, forget by policy) and its
path rules: a library under the workers, shared by the fileshare worker, the catalog's retention and the CLI."""
