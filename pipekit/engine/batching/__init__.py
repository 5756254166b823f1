"""Batch phases (``@phase(batch=...)``): requests saved with their cell, gathered
across items into provider batches, submitted idempotently, polled, collected.

``cell`` is one item's side (under its lock), ``batcher`` the run's side (the
submission records, the provider calls), ``drive`` the run's loop around them.
"""
