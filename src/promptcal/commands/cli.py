"""The ``promptcal`` console script.

Exit codes: 0 success; 2 invalid input or usage; 3 algorithm failure (partial
outputs written); 4 transient infrastructure failure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from promptcal.core.allocator import tune_allocator
from promptcal.core.errors import AlgorithmError, InvalidInputError, TransientError

EXIT_OK = 0
EXIT_INVALID_INPUT = 2
EXIT_ALGORITHM_FAILURE = 3
EXIT_TRANSIENT = 4

#: Sub-command name -> module under promptcal.commands.
COMMAND_MODULES: dict[str, str] = {
    "simulate": "simulate",
    "refcat": "refcat",
    "broker": "broker",
    "topics": "topics",
    "calibrate": "calibrate",
    "serve": "serve",
    "simulate-night": "simulate_night",
    "replay": "replay",
    "report": "report",
    "archive": "archive",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptcal", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES.values():
        module = importlib.import_module(f"promptcal.commands.{module_name}")
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_allocator()
    try:
        return int(args.handler(args) or 0)
    except InvalidInputError as exc:
        print(f"promptcal: invalid input: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except AlgorithmError as exc:
        print(f"promptcal: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ALGORITHM_FAILURE
    except TransientError as exc:
        print(f"promptcal: transient failure: {exc}", file=sys.stderr)
        return EXIT_TRANSIENT


#: Commands that have closed and synced every file when they return: their process may
#: end without the interpreter's teardown, which takes ~0.5 s once numba, astropy and
#: scipy are loaded (a third of a cold ``promptcal calibrate``).
FAST_EXIT_COMMANDS = frozenset({"calibrate"})


#: Commands whose process records the kernels it used for the next one to preload
#: (:mod:`promptcal.core.kernel_cache`). Recorded here, in a real command-line process,
#: not in :func:`main`, which tests call in processes that compiled every kernel.
RECORD_KERNELS_COMMANDS = frozenset({"calibrate", "serve"})


def console(argv: list[str] | None = None) -> None:
    """The ``promptcal`` console script: :func:`main`, then exit with its code."""
    argv = sys.argv[1:] if argv is None else argv
    code = main(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in RECORD_KERNELS_COMMANDS and code == 0:
        from promptcal.core.kernel_cache import record_used_kernels

        record_used_kernels()
    if command in FAST_EXIT_COMMANDS:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
