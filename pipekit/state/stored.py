"""An output a worker stored in the run's store itself, held by reference.

With ``--executor processes`` or ``dask`` a worker that reaches the run's
store writes a large output there (``StateStore.write_output``) and sends
back only a ``StoredOutput``: the item's state keeps it as the phase's output, and its
reference goes into the saved document as any output kept apart does. The
driver reads the value only when something on its side needs it (a handler
run here, ``pipekit.run``'s states); a downstream phase on a worker that
reaches the store gets the reference and reads the value there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from typing import Protocol


class _OutputReader(Protocol):
    def read_output(self, item_id: str, ref: str) -> Any: ...


@dataclass(frozen=True)
class StoredOutput:
    """A phase's output as a worker stored it: ``read_from`` gives the value back;
    ``digest`` is its ``output_hash``, taken where it was stored, so fingerprints
    and idempotency keys need not read it."""

    item_id: str
    ref: str
    digest: str | None

    def read_from(self, store: _OutputReader) -> Any:
        """The output's value, read from the run's ``store`` (a ``StateStore``)."""
        return store.read_output(self.item_id, self.ref)
