"""The ``lungtumorseg`` command line: ``segment``, ``models``, ``devices``, ``measure``/``evaluate`` and ``compare``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from .. import __version__
from ..core.errors import LungTumorSegError
from ..core.signals import exit_code_of, sigterm_as_interrupt
from .devices import add_devices_parser
from .segment import add_models_parser, add_segment_parser

EXIT_OK, EXIT_INTERNAL_ERROR, EXIT_BAD_INPUT = 0, 1, 2  # and 130 (Ctrl-C) / 143 (SIGTERM): see signals.py


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="lungtumorseg",
        description="Lung tumour segmentation in chest CT with an uncertainty (entropy) map. Research use only.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_segment_parser(commands)
    add_models_parser(commands)
    add_devices_parser(commands)
    try:
        from .measure import add_evaluate_parser, add_measure_parser
    except ImportError:
        pass
    else:
        add_measure_parser(commands)
        add_evaluate_parser(commands)
    from .compare import add_compare_parser

    add_compare_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    0 success; 1 internal error; 2 bad input or usage (one line on stderr naming the file); 130 cancelled
    with Ctrl-C, 143 cancelled with SIGTERM (staged outputs removed, "cancelled" reported).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    with sigterm_as_interrupt():
        return run_guarded(args)


def run_guarded(args: argparse.Namespace, report: Callable[[argparse.Namespace, str], None] | None = None) -> int:
    """Run ``args.func(args)``, turning errors into one line and an exit code (0, 1, 2, 130 or 143).

    Shared by the ``lungtumorseg`` and ``lungtumorseg-train`` command lines.
    """
    report = report or report_error
    try:
        return int(args.func(args) or 0)
    except LungTumorSegError as exc:
        report(args, str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        report(args, "cancelled")
        return exit_code_of(exc)
    except Exception as exc:  # noqa: BLE001 - last resort: one line for the user, traceback with -v
        logging.getLogger("lungtumorseg").debug("unexpected error", exc_info=True)
        report(args, f"unexpected {type(exc).__name__}: {exc} (run with -v for details)")
        return EXIT_INTERNAL_ERROR


def report_error(args: argparse.Namespace, message: str, prog: str = "lungtumorseg", **fields: object) -> None:
    """Print an error line on stderr (and a JSON ``error`` event with ``--progress json``).

    A message of several lines (some libraries' exceptions) is joined into one.
    """
    message = one_line(message)
    if getattr(args, "progress", None) == "json":
        print(json.dumps({"event": "error", **fields, "message": message}, default=str), flush=True)
    print(f"{prog}: error: {message}", file=sys.stderr)


def one_line(message: str) -> str:
    """``message`` with its lines joined by spaces."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
