"""Readers, writers, safe paths, fingerprints, atomic writes and group splits. Knows nothing of models."""
