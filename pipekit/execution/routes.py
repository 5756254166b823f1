"""Where a worker reads its large inputs and stores its large output: the run's store.

An executor whose workers reach the run's store (``PhaseExecutor.takes_stored_outputs``)
sends each call with an ``OutputRoute``: the worker reads the outputs it is given
by reference (``StoredOutput``) from the store and stores a large output there
itself, so neither travels through the driver. ``StoreRoutes`` makes those routes
for one run; ``send_values`` is the way back when a worker cannot reach the
store: the driver reads the values and they travel with the call.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
import uuid

from pipekit.execution.remote import OutputRoute
from pipekit.execution.remote import RemoteCall
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.outputs import inline_stored
from pipekit.pipeline.phases import PhaseDefinition


class StoreRoutes:
    """The ``OutputRoute`` of each call of a run, to the run's store.

    :param markers: True when workers may be on another machine (Dask): beside a
        file store (JSON, SQLite) the driver makes a file whose presence tells a
        worker it sees the same folder (a worker that does not sends its output
        back instead), removed by ``close``. False for workers on this machine,
        which see the driver's files by the same paths.
    """

    def __init__(self, *, markers: bool) -> None:
        self.markers = markers
        self._run_id = uuid.uuid4().hex[:12]
        #: Per file store's folder, the file whose presence tells a worker it sees that folder.
        self._made: dict[Path, str] = {}

    def route(self, phase: PhaseDefinition, ctx: PhaseContext | None) -> OutputRoute | None:
        """Where the worker running ``phase`` for ``ctx``'s item stores a large output
        and reads its inputs: the run's store, when another process can open it
        (None: the values travel with the call and back)."""
        checkpoints = ctx._checkpoints if ctx is not None else None
        url = checkpoints.store.reopen_url() if checkpoints is not None else None
        if checkpoints is None or url is None:
            return None
        scheme, _, rest = url.partition(":")
        marker: str | None = None
        if scheme in ("json", "sqlite"):
            if self.markers:
                folder = Path(rest) if scheme == "json" else Path(rest.partition("?")[0]).parent
                marker = self._marker(folder)
        elif scheme not in ("postgresql", "postgres"):
            return None
        token = checkpoints.store.fencing_token(checkpoints.item_id)
        return OutputRoute(url, checkpoints.item_id, phase.num, marker, token)

    def _marker(self, folder: Path) -> str:
        marker = self._made.get(folder)
        if marker is None:
            path = folder / f".pipekit-reach-{self._run_id}"
            with contextlib.suppress(OSError):
                path.touch()
            marker = self._made[folder] = str(path)
        return marker

    def close(self) -> None:
        """Remove the marker files this run made."""
        for marker in self._made.values():
            with contextlib.suppress(OSError):
                os.unlink(marker)
        self._made.clear()


def send_values(call: RemoteCall, ctx: PhaseContext | None) -> bool:
    """Replace each ``StoredOutput`` among ``call``'s arguments by its value, read
    here from the run's store, for a worker that cannot read it there. False
    (nothing changed) when ``ctx`` has no store to read from."""
    checkpoints = ctx._checkpoints if ctx is not None else None
    if checkpoints is None:
        return False
    store = checkpoints.store
    call.kwargs = inline_stored(call.kwargs, lambda stored: stored.read_from(store))
    return True
