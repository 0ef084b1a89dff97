"""Bucket storage: one atomic take over every bucket a request touches (memory or Redis)."""
