"""``sentiment-stack up|down|status|...``: Kafka and Redis without Docker, for projects that installed it.

The stack is the repository's ``scripts/stack``, shipped here as package data (stack.sh with kafka/ and
secure/ beside it). Its files go under ``.stack/`` in the current folder (``STACK_HOME`` to choose another);
this Python probes the broker, so kafka-python comes from the same environment.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

SCRIPT = Path(__file__).with_name("stack.sh")


def main(argv: list[str] | None = None) -> NoReturn:
    args = sys.argv[1:] if argv is None else argv
    bash = shutil.which("bash")
    if bash is None:
        sys.exit("sentiment-stack: error: bash not found")
    env = dict(os.environ)
    env.setdefault("STACK_PYTHON", sys.executable)
    env.setdefault("STACK_NAME", "sentiment-stack")
    sys.stdout.flush()
    os.execve(bash, [bash, str(SCRIPT), *args], env)
