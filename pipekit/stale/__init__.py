"""Staleness: code fingerprints, stale keys, and the check that compares them with the state."""
