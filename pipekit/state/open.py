"""State stores chosen by URL: ``json:DIR``, ``sqlite:PATH``, ``postgresql://...``.

``pipekit.state.store`` holds the interface and the JSON directory store; each
database store lives in its own module here and is imported only when used.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import contextvars
from pathlib import Path

from pipekit.outcomes import UsageError
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.store import StateStore
from pipekit.state.urls import mask_password


SCHEMES = ("json:DIR", "sqlite:PATH", "postgresql://USER:PASSWORD@HOST/DB")

#: False inside ``existing_stores_only``: stores are opened, never created.
_CREATE: contextvars.ContextVar[bool] = contextvars.ContextVar("pipekit_create_stores", default=True)


@contextlib.contextmanager
def existing_stores_only() -> Iterator[None]:
    """Within it, ``open_store_url`` opens a database store only if it exists and
    raises ``UsageError`` naming it otherwise, creating no file, folder or table:
    for commands that only read (``status``), where a mistyped path must not
    become an empty store that reads as "0 items". (A JSON directory is created
    by its first write only, so a missing one reads as empty and stays missing.)
    """
    token = _CREATE.set(False)
    try:
        yield
    finally:
        _CREATE.reset(token)


def open_store_url(url: str, *, pipeline: str | None = None) -> StateStore:
    """The store a ``--store`` URL names.

    :param pipeline: the pipeline name; a PostgreSQL database holds the state of
        many pipelines, kept apart by it (``?pipeline=NAME`` in the URL wins).
    :raises UsageError: for an unknown scheme or a store that cannot be used.
    """
    scheme, _, rest = url.partition(":")
    if scheme == "json" and rest:
        return JsonDirStore(Path(rest).expanduser())
    if scheme == "sqlite" and rest:
        from pipekit.state.sqlite import SqliteStore

        return SqliteStore.from_url(rest, create=_CREATE.get())
    if scheme in ("postgresql", "postgres"):
        from pipekit.state.postgres import PostgresStore

        return PostgresStore.from_url(url, pipeline=pipeline, create=_CREATE.get())
    raise UsageError(f"unsupported store {mask_password(url)!r}: use {', '.join(SCHEMES)}")




__all__ = ["existing_stores_only", "open_store_url"]
