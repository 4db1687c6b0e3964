"""Storage backends and the artifact format (zstd + AES-256-GCM segments, certificate-wrapped key)."""
