"""The bytes a run's driver process reads and writes, counted by the pipeline itself.

``DRIVER_IO`` is a fragment of pipeline source: appended to a pipeline, its hooks
count the driver's ``/proc/self/io`` (``rchar`` + ``wchar``: files and pipes
alike) from when the executor is made (its modules imported, no state read
yet) until the last item finished, and write the count to the file
``$DRIVER_IO_FILE`` when the run finishes. The count stops at the last item
because Linux adds a child's I/O to its parent's once the child is reaped:
the worker processes ``--executor processes`` and a Dask ``LocalCluster``
start are reaped when the executor closes, after the items, and what they
read (their inputs from the store) is not the driver's.
"""

from __future__ import annotations

from pathlib import Path
import textwrap


DRIVER_IO = textwrap.dedent('''

    import os as _io_os
    from pathlib import Path as _IoPath
    from pipekit import hookimpl as _io_hookimpl

    def _driver_io():
        fields = dict(line.split(": ") for line in _IoPath("/proc/self/io").read_text().splitlines())
        return int(fields["rchar"]) + int(fields["wchar"])

    _IO_AT = {}

    @_io_hookimpl(wrapper=True)
    def pipekit_make_executor(config, pipeline, name):
        executor = yield
        _IO_AT["start"] = _driver_io()
        return executor

    @_io_hookimpl
    def pipekit_item_finish(item):
        _IO_AT["last item"] = _driver_io()

    @_io_hookimpl
    def pipekit_run_finish(run, exitstatus):
        moved = _IO_AT["last item"] - _IO_AT["start"]
        _IoPath(_io_os.environ["DRIVER_IO_FILE"]).write_text(str(moved))
''')


def with_driver_io(source: str) -> str:
    """``source`` (a pipeline, indented as in a test) with the ``DRIVER_IO`` hooks after it."""
    return textwrap.dedent(source) + DRIVER_IO


def driver_io(path: Path) -> int:
    """The bytes the driver moved, as the ``DRIVER_IO`` hooks wrote them to ``path``."""
    return int(path.read_text())
