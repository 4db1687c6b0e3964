"""The file-share sync worker: incremental, content-addressed snapshots of the App Service file share."""
