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
        (["serve", "--port", "99999"], "expected a port number"),
        (["serve", "--port", "http"], "expected a port number"),
        (["serve", "--host"], "expected one argument"),
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


def test_serve_defaults_to_loopback_port_8080() -> None:
    from worker.__main__ import build_parser
    from worker.config import Settings

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == (None, None)  # so the settings decide
    fields = Settings.model_fields
    assert (fields["api_host"].default, fields["api_port"].default, fields["api_token"].default) == (
        "127.0.0.1",
        8080,
        None,
    )


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SENTIMENT_API_TOKEN": " "}, "SENTIMENT_API_TOKEN: must not be empty"),
        ({"SENTIMENT_API_TOKEN_FILE": "/nonexistent/token"}, "SENTIMENT_API_TOKEN_FILE: cannot read"),
        ({"SENTIMENT_API_PORT": "70000"}, "SENTIMENT_API_PORT"),
    ],
)
def test_bad_api_settings_exit_2_with_one_line(env: dict[str, str], fragment: str) -> None:
    out = cli("serve", **env)
    assert out.returncode == 2
    assert fragment in one_line(out.stderr)


def test_serve_on_a_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cli("serve", "--port", str(port))
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(out.stderr)


def test_serve_with_unreachable_redis_is_one_line_and_exit_1() -> None:
    port = closed_port()
    out = cli(
        "serve",
        "--port",
        "0",
        SENTIMENT_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        SENTIMENT_CONNECT_TIMEOUT_S="2",
    )
    assert out.returncode == 1
    assert f"cannot reach Redis at 127.0.0.1:{port}" in one_line(out.stderr)
