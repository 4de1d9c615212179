"""Command-line bits shared by the benchmark entry points."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class ArgParser(argparse.ArgumentParser):
    """A bad argument is one line on stderr and exit 2, as everywhere in the project."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def int_list(text: str) -> list[int]:
    """ "8,16,32" -> [8, 16, 32]; positive integers only."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values
