"""python -m tests.faults [--only F1,F3] [--fast] [--guarantee at_least_once|exactly_once] [--json PATH]

Starts the suite's own Kafka + Redis (scripts/stack with FAULTS_STACK_DIR, default .stack/faults, and ports
29092/29093/26390 unless FAULTS_*_PORT say otherwise), runs the scenarios, prints the result table and writes
it as JSON. Exit 0 when every scenario that ran passed; 1 otherwise; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tests.faults.report import ERROR, FAIL, NOT_AVAILABLE, Result, table
from tests.faults.run import exactly_once_available, run_one, tiny_model
from tests.faults.scenarios import FAST, TITLES
from tests.faults.stack import Stack


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.split("\n\n")[1])
    p.add_argument("--only", help="comma-separated scenario names, e.g. F1,F3")
    p.add_argument("--fast", action="store_true", help=f"the CI subset: {','.join(FAST)}")
    p.add_argument("--guarantee", choices=("at_least_once", "exactly_once"), default="at_least_once")
    p.add_argument(
        "--json", type=Path, default=Path("runs/faults/results.json"), help="where to write results"
    )
    p.add_argument("--keep-stack", action="store_true", help="leave the suite's Kafka and Redis running")
    args = p.parse_args(argv)
    names = list(TITLES)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in TITLES]
        if unknown:
            p.error(f"unknown scenario(s): {', '.join(unknown)}")
        names = wanted
    elif args.fast:
        names = list(FAST)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stack = Stack.from_env()
    work = Path(tempfile.mkdtemp(prefix="faults-"))
    print(f"faults: stack in {stack.dir}, Kafka {stack.bootstrap}, Redis {stack.redis_url()}; logs in {work}")
    stack.up()
    results: list[Result] = []
    try:
        model = tiny_model(work)
        if args.guarantee == "exactly_once" and not exactly_once_available(stack, work, model):
            results = [
                Result(
                    n, TITLES[n], NOT_AVAILABLE, problems=["exactly_once is refused by the worker (exit 2)"]
                )
                for n in names
            ]
        else:
            for name in names:
                print(f"faults: {name} {TITLES[name]} ...", flush=True)
                r = run_one(name, stack, work, model, args.guarantee)
                print(f"faults: {name} {r.status} in {r.seconds:.0f}s {'; '.join(r.problems)}", flush=True)
                results.append(r)
    finally:
        if not args.keep_stack:
            stack.down()
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([r.as_json() for r in results], indent=2) + "\n")
    print(f"faults: results in {args.json}")
    return 1 if any(r.status in (FAIL, ERROR) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
