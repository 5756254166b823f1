"""``pipekit migrate --from URL --to URL``: copy a run's state between stores, verified.

Every item's document is copied with its large outputs; afterwards both stores
are read back and compared: the number of items, and a SHA-256 of every item's
document with its outputs inlined (references differ between stores, contents
must not).

Resumable: a migrate killed half way left some items in the target, each whole
(every save is atomic, and an item's outputs are written before the state
that refers to them). Run again, it skips the items the target already holds
unchanged and copies the rest; an item the target holds with other contents
is refused, so nothing there is overwritten.
"""

from __future__ import annotations

from collections.abc import Iterator
import hashlib
import json
import sys
from typing import Any

from pipekit.cli.parsing import command_parser
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.outcomes import UsageError
from pipekit.state.store import StateStore


def item_checksum(store: StateStore, item_id: str, document: dict[str, Any]) -> str:
    """SHA-256 of ``document`` with every output by reference read back and inlined."""
    canonical = dict(document)
    outputs = dict(canonical.get("phase_outputs") or {})
    for num, ref in (canonical.pop("phase_output_files", None) or {}).items():
        outputs[str(num)] = store.read_output(item_id, str(ref))
    canonical["phase_outputs"] = outputs
    data = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


def _copies(
    source: StateStore, target: StateStore, errors: list[StateFileError], copied: set[str], skip: set[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    for item_id, document in source.load_all(errors):
        if item_id in skip:
            continue
        refs = document.get("phase_output_files") or {}
        try:
            texts = {int(num): source.read_output(item_id, str(ref)) for num, ref in refs.items()}
        except StateFileError as exc:
            errors.append(exc)
            continue
        copy = dict(document)
        copy["phase_output_files"] = {
            str(num): target.write_output(item_id, num, text) for num, text in sorted(texts.items())
        }
        copied.add(item_id)
        yield item_id, copy


def checksums(store: StateStore, errors: list[StateFileError]) -> dict[str, str]:
    """Every readable item's checksum, by id."""
    found = {}
    for item_id, document in store.load_all(errors):
        try:
            found[item_id] = item_checksum(store, item_id, document)
        except StateFileError as exc:
            errors.append(exc)
    return found


def already_copied(source: StateStore, target: StateStore) -> set[str]:
    """The items ``target`` already holds exactly as ``source`` does (a killed
    migrate's); raises ``UsageError`` when it holds any with other contents."""
    shared = set(source.item_ids()) & set(target.item_ids())
    same, different = set(), []
    for item_id, found in target.load_many(sorted(shared)):
        ours = source.load(item_id)
        if isinstance(found, dict) and ours is not None and (
            item_checksum(target, item_id, found) == item_checksum(source, item_id, ours)
        ):
            same.add(item_id)
        else:
            different.append(item_id)
    if different:
        raise UsageError(
            f"{target.location} already holds {len(different)} of the items with other contents "
            f"(e.g. {different[0]!r}); migrate into an empty store"
        )
    return same


def migrate(source: StateStore, target: StateStore) -> tuple[int, int, str, list[StateFileError]]:
    """Copy every item of ``source`` into ``target`` and verify; items the target
    already holds unchanged (a killed migrate's) are kept, not copied again.

    Returns the number of items copied, the number verified (those and the ones
    kept), the checksum of the whole run and the unreadable source items (not copied). Raises ``UsageError`` when the
    verification fails or the target holds some of the items with other contents.
    """
    errors: list[StateFileError] = []
    already = already_copied(source, target)
    ids: set[str] = set()
    copied = target.save_many(_copies(source, target, errors, ids, already))
    ids |= already
    expected = {k: v for k, v in checksums(source, []).items() if k in ids}
    got = checksums(target, [])
    if len(got) != copied + len(already) or set(got) != set(expected):
        raise UsageError(f"verification failed: {len(expected)} items in the source, {len(got)} in the target")
    different = sorted(k for k in expected if expected[k] != got[k])
    if different:
        raise UsageError(f"verification failed: {len(different)} items differ (e.g. {different[0]!r})")
    # Over every item, so a resumed migrate prints the checksum a whole one does.
    total = hashlib.sha256("".join(f"{k}\0{got[k]}\n" for k in sorted(got)).encode("utf-8", "surrogatepass"))
    return copied, len(got), total.hexdigest(), errors


def migrate_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit migrate --from URL --to URL [--pipeline NAME]``."""
    from pipekit.state.open import open_store_url

    parser = command_parser(
        "pipekit migrate", "Copy a run's state from one store to another and verify every item.", module=False
    )
    parser.add_argument("--from", dest="source", required=True, metavar="URL", help="store to copy from")
    parser.add_argument("--to", dest="target", required=True, metavar="URL", help="store to copy into (empty)")
    parser.add_argument(
        "--pipeline", metavar="NAME", help="pipeline name, for postgresql:// URLs without ?pipeline=NAME"
    )
    if "-h" in args or "--help" in args:
        parser.print_help(sys.stdout)
        return ExitCode.OK
    option = parser.parse_args(args)
    source = open_store_url(option.source, pipeline=option.pipeline)
    try:
        target = open_store_url(option.target, pipeline=option.pipeline)
        try:
            copied, verified, checksum, errors = migrate(source, target)
        finally:
            target.close()
    finally:
        source.close()
    for error in errors:
        print(f"pipekit: error: {error}; not copied", file=sys.stderr)
    print(f"migrated {copied} items from {source.location} to {target.location}")
    if verified > copied:
        print(f"kept {verified - copied} items an earlier migrate had copied")
    print(f"verified: {verified} items, sha256 {checksum}")
    return ExitCode.USAGE_ERROR if errors else ExitCode.OK
