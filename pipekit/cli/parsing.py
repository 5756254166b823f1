"""The one way a pipekit command builds its argument parser.

Every verb starts from ``command_parser``: argparse that raises ``UsageError``
instead of exiting, a ``-h/--help`` flag the verb answers itself (so help goes
to the stream the verb chooses), and the arguments most verbs share, each with
one wording: MODULE, ``--state-dir`` and ``--store``.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from pipekit.outcomes import UsageError


#: Choices of ``--progress`` (and of ``progress`` in ``[tool.pipekit]``).
PROGRESS_MODES = ("auto", "rich", "simple", "none")

MODULE_HELP = "dotted module name or path to a .py file"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def command_parser(
    prog: str,
    description: str,
    *,
    module: bool = True,
    state: bool = False,
) -> ArgumentParser:
    """A parser for the verb ``prog``: MODULE (unless ``module=False``), then
    ``--state-dir`` and ``--store`` when ``state``, then ``-h/--help``; the verb
    adds its own arguments after these.

    ``-h`` is a plain flag (``option.help``), not argparse's action that exits.
    """
    parser = ArgumentParser(prog=prog, description=description, add_help=False)
    if module:
        parser.add_argument("module", nargs="?", metavar="MODULE", help=MODULE_HELP)
    if state:
        parser.add_argument("--state-dir", metavar="DIR", help="the pipeline's state directory")
        parser.add_argument("--store", metavar="URL", help="where state lives (json:DIR); wins over --state-dir")
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    return parser


def add_item_options(parser: argparse.ArgumentParser, *, item_help: str = "an item id (repeatable)") -> None:
    """The item sources of ``run``, in the group ``items``: ``--item``, ``--items``,
    ``--limit``, ``--sample`` and ``--seed`` (one wording for every verb)."""
    items = add_item_sources(parser, item_help=item_help)
    items.add_argument("--limit", type=_count, metavar="N", help="only the first N selected items")
    items.add_argument(
        "--sample",
        type=_count,
        metavar="N",
        help="N of the selected items at random; the summary projects the cost of them all",
    )
    items.add_argument("--seed", type=int, metavar="S", help="the seed of --sample (default: random, printed)")


def add_item_sources(parser: argparse.ArgumentParser, *, item_help: str) -> argparse._ArgumentGroup:
    """``--item`` and ``--items`` in the group ``items`` (the verbs that read a
    batch take these; ``run`` and ``plan`` add ``--limit`` and ``--sample``)."""
    items = parser.add_argument_group("items")
    items.add_argument("--item", action="append", default=[], metavar="ID", help=item_help)
    items.add_argument(
        "--items",
        action="append",
        default=[],
        metavar="FILE",
        help="items file: .txt, .jsonl or .csv (repeatable); with --item, just those items of it",
    )
    return items


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number, 1 or more")
    return value
