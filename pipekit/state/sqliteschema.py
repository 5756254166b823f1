"""The SQLite store's tables and the statements it writes them with (``pipekit.state.sqlite``)."""

from __future__ import annotations

import sqlite3


#: The tables, indexes and trigger, each idempotent.
SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    status TEXT,
    next_phase INTEGER,
    done_names TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}',
    cost_usd REAL NOT NULL DEFAULT 0,
    rev INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    stale_digest TEXT
);
-- The distinct stale keys (pipekit.state.stalekey); an item's row names its key by
-- digest, so the covering index stays narrow (a run's items share few keys).
CREATE TABLE IF NOT EXISTS stale_keys (digest TEXT PRIMARY KEY, key TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    item_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (item_id, phase, key)
);
CREATE INDEX IF NOT EXISTS items_status ON items (status);
-- A state changed by hand (not by pipekit, which bumps rev) no longer counts as
-- finished, so the next run reads it and names it if it is broken.
CREATE TRIGGER IF NOT EXISTS items_edited AFTER UPDATE OF state ON items WHEN NEW.rev IS OLD.rev
BEGIN
    UPDATE items SET done_names = '[]' WHERE item_id = NEW.item_id;
END;
CREATE TABLE IF NOT EXISTS outputs (
    item_id TEXT NOT NULL,
    ref TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (item_id, ref)
);
"""

#: Run after SCHEMA: databases made before the stale key get its column first.
INDEXES = """
DROP INDEX IF EXISTS items_next_phase;
-- Covers the resume and "what is left" queries: they never read a state document.
CREATE INDEX IF NOT EXISTS items_finished ON items (next_phase, item_id, done_names, metadata, cost_usd, stale_digest);
"""

#: Writes one item's document and its index columns.
UPSERT = """
INSERT INTO items (item_id, state, status, next_phase, done_names, metadata, cost_usd, stale_digest)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (item_id) DO UPDATE SET state = excluded.state, status = excluded.status,
    next_phase = excluded.next_phase, done_names = excluded.done_names, metadata = excluded.metadata,
    cost_usd = excluded.cost_usd, stale_digest = excluded.stale_digest, rev = items.rev + 1
"""

#: Records a stale key under its digest.
ADD_KEY = "INSERT OR IGNORE INTO stale_keys (digest, key) VALUES (?, ?)"


def statements(script: str) -> list[str]:
    """``script`` split into statements (a trigger body's ``;`` stays inside its statement)."""
    found, current = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            found.append(current.strip())
            current = ""
    return found
