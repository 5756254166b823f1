"""The PostgreSQL store's tables and the statements it writes them with."""

#: Any constant: serialises schema creation between drivers starting at once.
from __future__ import annotations


SCHEMA_LOCK_KEY = 0x70697065

#: The tables and indexes, applied in order, each idempotent.
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS pipekit_items (
        pipeline TEXT NOT NULL,
        item_id TEXT NOT NULL,
        state JSONB NOT NULL,
        status TEXT,
        next_phase INTEGER,
        done_names TEXT[] NOT NULL DEFAULT '{}',
        metadata JSONB NOT NULL DEFAULT '{}',
        cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (pipeline, item_id))""",
    # added after the first schema; idempotent
    "ALTER TABLE pipekit_items ADD COLUMN IF NOT EXISTS cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0",
    "ALTER TABLE pipekit_items ADD COLUMN IF NOT EXISTS stale_key TEXT",
    "CREATE INDEX IF NOT EXISTS pipekit_items_next_phase ON pipekit_items (pipeline, next_phase)",
    "CREATE INDEX IF NOT EXISTS pipekit_items_status ON pipekit_items (pipeline, status)",
    """CREATE TABLE IF NOT EXISTS pipekit_outputs (
        pipeline TEXT NOT NULL,
        item_id TEXT NOT NULL,
        ref TEXT NOT NULL,
        text TEXT NOT NULL,
        PRIMARY KEY (pipeline, item_id, ref))""",
    """CREATE TABLE IF NOT EXISTS pipekit_checkpoints (
        pipeline TEXT NOT NULL,
        item_id TEXT NOT NULL,
        phase TEXT NOT NULL,
        key TEXT NOT NULL,
        value JSONB NOT NULL,
        PRIMARY KEY (pipeline, item_id, phase, key))""",
    """CREATE TABLE IF NOT EXISTS pipekit_leases (
        pipeline TEXT NOT NULL,
        item_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (pipeline, item_id))""",
    # the holder's identity (pipekit.state.holder.Holder as JSON); NULL from older drivers
    "ALTER TABLE pipekit_leases ADD COLUMN IF NOT EXISTS holder TEXT",
]

#: Writes one item's document and its index columns.
UPSERT = """
INSERT INTO pipekit_items (pipeline, item_id, state, status, next_phase, done_names, metadata, cost_usd,
    stale_key, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (pipeline, item_id) DO UPDATE SET state = excluded.state, status = excluded.status,
    next_phase = excluded.next_phase, done_names = excluded.done_names, metadata = excluded.metadata,
    cost_usd = excluded.cost_usd, stale_key = excluded.stale_key, updated_at = now()
"""

DROP_CHECKPOINTS = "DELETE FROM pipekit_checkpoints WHERE pipeline = %s AND item_id = %s AND phase = %s"

#: True once the last of ``SCHEMA`` was applied (they are applied together, in order).
SCHEMA_IS_CURRENT = """SELECT 1 FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = 'pipekit_leases' AND column_name = 'holder'"""

#: The finished rows of some items (``PostgresStore.iter_fresh_finished_of``): pipeline, ids,
#: phase names. The pipeline comes from a subquery the planner does not look into (``OFFSET
#: 0``), not as a constant: until autovacuum's ANALYZE sees a new pipeline, the planner took
#: ``pipeline = 'new'`` for about one row, so the ``(pipeline, next_phase)`` and ``(pipeline,
#: status)`` indexes looked as cheap as the primary key, and it read the whole pipeline
#: through them at each try (23-152 ms for 64 ids among 30,000-100,000 finished items, 0.24-
#: 0.36 ms by primary key). A join from ``unnest(ids)`` planned the same with the pipeline a
#: constant, and with it a column of ``unnest(pipelines, ids)`` made one pass over the
#: pipeline per id in a table last analysed nearly empty; this is one pass at worst.
#: Figures, and the state this does not cover, in benchmarks/RESULTS.md.
FINISHED_OF = """SELECT i.item_id, i.metadata, i.cost_usd, i.stale_key
    FROM (SELECT %s::text AS pipeline OFFSET 0) AS this
    JOIN pipekit_items i ON i.pipeline = this.pipeline
    WHERE i.item_id = ANY(%s) AND i.next_phase IS NULL AND i.done_names @> %s
      AND jsonb_typeof(i.state) = 'object' AND i.state ? 'schema_version' AND i.state ? 'phases'"""
