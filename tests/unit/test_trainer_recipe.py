"""How a training run is set up: precision, attention, dropout, and an old champion's recipe re-read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import trainer.precision
from trainer.learn import LearnOptions, _train_config
from trainer.train import TrainConfig, _device_and_precision, attention_for, set_dropout


def test_bf16_on_a_cpu_trains_with_eager_attention_elsewhere_the_default() -> None:
    assert attention_for("cpu", True) == "eager"
    assert attention_for("cpu", False) is None
    assert attention_for("cuda", True) is None


@pytest.mark.parametrize(
    ("amx", "asked", "expected"),
    [(True, None, True), (False, None, False), (True, False, False), (False, True, True)],
)
def test_cpu_bf16_follows_amx_unless_asked(
    monkeypatch: pytest.MonkeyPatch, amx: bool, asked: bool | None, expected: bool
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(trainer.precision, "amx_bf16", lambda: amx)
    cfg = TrainConfig(base_model="minilm", train=["t.jsonl"], output="out", bf16=asked)
    assert _device_and_precision(cfg) == ("cpu", expected)


def test_set_dropout_reaches_every_dropout_module() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 2)))
    assert set_dropout(model, 0.0) == 2
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.0, 0.0]
    model.train()
    x = torch.ones(8, 4)
    assert torch.equal(model(x), model(x))  # no random masks left


def test_an_old_champion_keeps_its_dropout_and_a_new_one_its_own(tmp_path: Path) -> None:
    options = LearnOptions(registry=str(tmp_path), train=["t.jsonl"], validation=["v.jsonl"])
    old = {"base_model": "minilm", "train": ["t.jsonl"], "output": "x", "lora_dropout": 0.1}
    assert _train_config(old, options, ["t.jsonl"], tmp_path / "c").dropout == 0.1
    new = {"base_model": "minilm", "train": ["t.jsonl"], "output": "x", "dropout": 0.0}
    assert _train_config(new, options, ["t.jsonl"], tmp_path / "c").dropout == 0.0
