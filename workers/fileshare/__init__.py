"""The file-share sync worker: incremental, content-addressed snapshots of the App Service file share. This package
is the source side (trees: local and SMB; readers, chunker, the sync's walk; restore into a tree); the repository
the snapshots live in is ``workers.repository``."""
