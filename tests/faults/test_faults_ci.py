"""The fast subset of the fault suite (F1, F3, F12, F13, F17, F20) on its own Kafka + Redis (see stack.py).

The whole suite: `python -m tests.faults`. Each scenario here runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.report import PASS
from tests.faults.run import run_one, tiny_model
from tests.faults.scenarios import FAST
from tests.faults.stack import Stack
from worker.pytest_plugin import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack.from_env()
    started_here = not s.running()
    try:
        s.up()
    except Exception as exc:
        unavailable(f"could not start the fault suite's stack in {s.dir}: {exc}")
    yield s
    if started_here:
        s.down()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return tiny_model(tmp_path_factory.mktemp("faults-model"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", FAST)
def test_fault_scenario(name: str, stack: Stack, model: Path, tmp_path: Path) -> None:
    result = run_one(name, stack, tmp_path, model, "at_least_once")
    assert result.status == PASS, f"{name}: {result.problems} (logs: {result.notes.get('logs')})"
    assert result.lost == 0 and result.counts_exact
