"""scripts/system-deps, the set-up check of `make demo` and `make test`, on machine states made with a PATH
of stand-in tools: without java, mvn or redis-server it installs them as root with apt-get, and otherwise
stops with one line naming the command to run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "system-deps"


def _tool(bin_dir: Path, name: str, body: str = "exit 0") -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path: Path) -> tuple[Path, Path]:
    """(a checkout without .venv and .stack holding the script, a bin folder with only the basic tools)."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / "system-deps")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash", "dirname"):
        found = shutil.which(name)
        assert found, name
        (bin_dir / name).symlink_to(found)
    _tool(bin_dir, "id", 'echo "${FAKE_UID:-1000}"')
    _tool(bin_dir, "python3", "exit 1")  # a python3 without ensurepip (no python3-venv)
    return root, bin_dir


def _run(machine: tuple[Path, Path], what: str, uid: int = 1000) -> subprocess.CompletedProcess[str]:
    root, bin_dir = machine
    return subprocess.run(
        [str(bin_dir / "bash"), str(root / "scripts" / "system-deps"), what],
        env={"PATH": str(bin_dir), "FAKE_UID": str(uid), "PY": "python3"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_without_them_a_user_gets_one_line_with_the_command(machine: tuple[Path, Path]) -> None:
    _, bin_dir = machine
    _tool(bin_dir, "apt-get")
    _tool(bin_dir, "sudo")
    done = _run(machine, "demo")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        "system-deps: missing system packages; run: sudo apt-get install -y "
        "openjdk-17-jre-headless maven redis-server python3-venv\n"
    )
    done = _run(machine, "test")
    assert done.returncode == 1
    assert done.stderr.endswith("python3-venv chromium chromium-driver\n") and done.stderr.count("\n") == 1


def test_as_root_with_apt_it_installs_what_is_missing(machine: tuple[Path, Path], tmp_path: Path) -> None:
    _, bin_dir = machine
    calls = tmp_path / "apt.log"
    _tool(bin_dir, "apt-get", f'echo "$@" >> {calls}')
    _tool(bin_dir, "java")  # already there: not installed again
    done = _run(machine, "test", uid=0)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == [
        "update -q",
        "install -y -q maven redis-server python3-venv chromium chromium-driver",
    ]


def test_nothing_to_do_when_everything_is_there(machine: tuple[Path, Path]) -> None:
    _, bin_dir = machine
    for name in ("java", "mvn", "redis-server", "chromium", "chromedriver"):
        _tool(bin_dir, name)
    _tool(bin_dir, "python3")  # ensurepip importable
    done = _run(machine, "test")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_only_chromium_missing_is_a_note_not_a_stop(machine: tuple[Path, Path]) -> None:
    _, bin_dir = machine
    for name in ("java", "mvn", "redis-server", "apt-get"):
        _tool(bin_dir, name)
    _tool(bin_dir, "python3")
    done = _run(machine, "test")
    assert done.returncode == 0
    assert done.stderr.startswith("system-deps: note: the dashboard test is skipped without chromium")


def test_without_apt_it_names_what_to_install(machine: tuple[Path, Path]) -> None:
    done = _run(machine, "demo")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "install Java 17+, Maven, redis-server" in done.stderr
    assert _run(machine, "nonsense").returncode == 2
