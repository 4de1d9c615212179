"""Shared test setup: the service fixtures, the `integration` mark by location, and CUDA-only skips."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["worker.pytest_plugin"]

INTEGRATION_DIR = Path(__file__).parent / "integration"


def _cuda_available() -> bool:
    # torch is imported only when a gpu test was collected: it costs seconds to import.
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = []
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("gpu") is not None:
            gpu_items.append(item)
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs CUDA: torch.cuda.is_available() is False")
        for item in gpu_items:
            item.add_marker(skip)
