"""Fake OpenAI and Anthropic batch servers on 127.0.0.1, for offline tests and demos.

Run one as its own process::

    python -m pipekit_batch.fakeserver openai --port 0 --port-file port.txt --state-dir fake-state

then point the SDK at it (``OPENAI_BASE_URL=http://127.0.0.1:PORT/v1`` or
``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT``, any API key). It speaks each
provider's batch API as the official SDK calls it, answers every chat request
with its last user message (tokens counted in words), and keeps its state
under ``--state-dir``, so it survives a restart. A small extra API drives it:

- ``POST /_fake/advance`` ``{"batch_id": optional, "outcome": "ended" | "expired" | "failed"}``
  ends the running batches;
- ``POST /_fake/config`` sets ``poison`` (custom_ids that always fail),
  ``expire`` and ``expire_fraction`` (requests left unprocessed on their first
  submission) and ``end_after_polls`` (a batch ends by itself after that many
  retrievals);
- ``POST /_fake/reset`` forgets everything (for a test's fresh start);
- ``GET /_fake/stats``: ``submitted`` (how many times each custom_id was
  submitted), ``calls`` (requests per route) and each batch's status.

:class:`FakeServer` starts one from Python and wraps that API.
"""

from __future__ import annotations

from pipekit_batch.fakeserver.process import FakeServer
from pipekit_batch.fakeserver.process import main
from pipekit_batch.fakeserver.process import serve


__all__ = ["FakeServer", "main", "serve"]
