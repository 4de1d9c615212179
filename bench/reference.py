"""Pure inference in a process of its own, like the worker: the reference for the end-to-end ratios.

Measured inside the harness, it would share that process with the harness's Kafka client threads (result
collectors, producers), so it runs in a clean interpreter instead. Protocol: one JSON object per line on
stdin, ``{"texts": [...], "batch": B}``; one JSON line per request on stdout with inference.measure's
figures (after a first line ``{"ready": true}`` once the model is loaded).

    python -m bench.reference --model DIR [--max-length 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from bench import inference


class Reference:
    """The harness's handle on a reference process."""

    def __init__(
        self, model_dir: Path, *, max_length: int, threads: int, cwd: Path, precision: str = "auto"
    ) -> None:
        cmd = [sys.executable, "-m", "bench.reference", "--model", str(model_dir)]
        cmd += ["--max-length", str(max_length), "--threads", str(threads), "--precision", precision]
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the reference process exited (code {self.proc.wait()})")
        return dict(json.loads(line))

    def measure(self, texts: Sequence[str], batch: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"texts": list(texts), "batch": batch}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve(clf: Any, requests: IO[str], replies: IO[str]) -> None:
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in requests:
        request = json.loads(line)
        replies.write(json.dumps(inference.measure(clf, request["texts"], int(request["batch"]))) + "\n")
        replies.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="auto", help="SENTIMENT_PRECISION's values (default auto)")
    args = p.parse_args(argv)
    clf = inference.load(
        args.model,
        device="cpu",
        batch=32,
        max_length=args.max_length,
        threads=args.threads,
        precision=args.precision,
    )
    serve(clf, sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
