"""The ``lungtumorseg`` command line: ``segment``, ``models``, ``measure``/``evaluate`` and ``compare``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from . import __version__
from .cli_segment import add_models_parser, add_segment_parser
from .errors import LungTumorSegError


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
    try:
        from .cli_measure import add_evaluate_parser, add_measure_parser
    except ImportError:
        pass
    else:
        add_measure_parser(commands)
        add_evaluate_parser(commands)
    from .cli_compare import add_compare_parser

    add_compare_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    return run_guarded(args)


def run_guarded(args: argparse.Namespace, report: Callable[[argparse.Namespace, str], None] | None = None) -> int:
    """Run ``args.func(args)``, turning errors into one line and an exit code (0, 1, 2 or 130).

    Shared by the ``lungtumorseg`` and ``lungtumorseg-train`` command lines.
    """
    report = report or report_error
    try:
        return int(args.func(args) or 0)
    except LungTumorSegError as exc:
        report(args, str(exc))
        return 2
    except KeyboardInterrupt:
        report(args, "cancelled")
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line for the user, traceback with -v
        logging.getLogger("lungtumorseg").debug("unexpected error", exc_info=True)
        report(args, f"unexpected {type(exc).__name__}: {exc} (run with -v for details)")
        return 1


def report_error(args: argparse.Namespace, message: str, prog: str = "lungtumorseg") -> None:
    """Print an error line on stderr (and a JSON ``error`` event with ``--progress json``)."""
    if getattr(args, "progress", None) == "json":
        print(json.dumps({"event": "error", "message": message}), flush=True)
    print(f"{prog}: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
