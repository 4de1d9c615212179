"""`sentiment-stack` (worker/stack): the local stack as the package ships it, without starting anything."""

from __future__ import annotations

import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_stack(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "worker.stack", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


@pytest.mark.parametrize(("args", "needle"), [(("bogus",), "unknown command 'bogus'"), ((), "no command")])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    result = run_stack(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    expected = f"sentiment-stack: error: {needle} (try: sentiment-stack help)"
    assert result.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / ".stack").exists()


def test_help_names_the_commands_under_its_installed_name(tmp_path: Path) -> None:
    result = run_stack("help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: sentiment-stack COMMAND")
    for command in ("up", "down", "status", "restart-kafka", "reset"):
        assert f"\n  {command} " in result.stdout


def test_status_reports_a_stack_that_is_not_running_in_the_current_folder(tmp_path: Path) -> None:
    # Port 1: nothing listens there, unlike 9092, where a developer's stack may be running.
    result = subprocess.run(
        [sys.executable, "-m", "worker.stack", "status"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "STACK_KAFKA_PORT": "1"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.strip() == "kafka: not running"


def test_the_files_the_script_uses_ship_as_package_data() -> None:
    stack = files("worker.stack")
    for name in ("stack.sh", "kafka/pom.xml", "kafka/KafkaReady.java", "kafka/log4j2.properties"):
        assert stack.joinpath(name).is_file(), name
    for name in ("certs", "kafka-worker.acl", "redis-worker.acl"):
        assert stack.joinpath("secure", name).is_file(), name


def test_scripts_stack_runs_the_packaged_script() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "stack"), "help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: scripts/stack COMMAND")
