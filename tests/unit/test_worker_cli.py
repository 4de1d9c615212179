"""CLI errors: one line on stderr, the right exit code, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    base["PYTHONPATH"] = str(ROOT) + os.pathsep + base.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "required: command"),
        (["launch"], "invalid choice"),
        (["counts", "--window", "soon"], "window must look like"),
        (["counts", "--kind", "tweet"], "invalid choice"),
        (["run", "--until-idle", "-3"], "must be positive"),
        (["run", "--until-idle", "x"], "expected seconds"),
        (["mood"], "conversation_id"),
        (["schema", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], fragment: str) -> None:
    out = cli(*args)
    assert out.returncode == 2
    assert fragment in one_line(out.stderr)


def test_bad_settings_exit_2_with_one_line() -> None:
    out = cli("counts", SENTIMENT_BUCKET_SECONDS="0", SENTIMENT_DEVICE="gpu")
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert "SENTIMENT_BUCKET_SECONDS" in line and "SENTIMENT_DEVICE" in line


def test_unreachable_redis_is_one_line_and_exit_1() -> None:
    port = closed_port()
    out = cli(
        "counts", SENTIMENT_REDIS_URL=f"redis://user:pw@127.0.0.1:{port}/0", SENTIMENT_CONNECT_TIMEOUT_S="2"
    )
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert f"cannot reach Redis at 127.0.0.1:{port}" in line
    assert "user:pw" not in line  # credentials stay out of the message
