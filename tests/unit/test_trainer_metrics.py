"""trainer.evaluate metrics and plots, and the class weights used by --weighted-loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.evaluate import (
    classification_metrics,
    plot_confusion_matrix,
    plot_training_curve,
    restricted_predictions,
)

NEG, NEU, POS = range(3)


def test_three_class_metrics_by_hand() -> None:
    y_true = [NEG, NEG, NEU, NEU, POS, POS]
    y_pred = [NEG, NEU, NEU, NEU, POS, NEG]
    m = classification_metrics(y_true, y_pred)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recalls 1/2, 2/2, 1/2; precisions 1/2, 2/3, 1/1
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    f1 = [2 * p * r / (p + r) for p, r in [(0.5, 0.5), (2 / 3, 1.0), (1.0, 0.5)]]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["per_class"]["neutral"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["positive"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["negative"]["support"] == 2
    assert m["per_class"]["neutral"]["predicted_share"] == pytest.approx(3 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows true, columns predicted
    assert m["labels"] == ["negative", "neutral", "positive"]


def test_two_class_set_averages_over_present_classes() -> None:
    # uci_sentiment_sentences has no neutral: predicting neutral is an error, but neutral is not averaged in.
    y_true = [NEG, NEG, POS, POS]
    y_pred = [NEG, NEU, POS, POS]
    m = classification_metrics(y_true, y_pred)
    assert m["classes_present"] == ["negative", "positive"]
    assert m["macro_recall"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["per_class"]["neutral"]["support"] == 0
    assert m["per_class"]["neutral"]["predicted_share"] == pytest.approx(1 / 4)


def test_restricted_predictions_ignore_absent_classes() -> None:
    scores = np.array([[0.2, 0.7, 0.1], [0.1, 0.5, 0.4], [0.6, 0.3, 0.1]])
    assert restricted_predictions(scores, [NEG, POS]).tolist() == [NEG, POS, NEG]
    assert restricted_predictions(scores, [NEG, NEU, POS]).tolist() == [NEU, NEU, NEG]


def test_empty_input_is_an_error() -> None:
    with pytest.raises(ValueError):
        classification_metrics([], [])


def test_class_weights_are_balanced() -> None:
    from trainer.train import class_weights

    weights = class_weights([NEG] * 1 + [NEU] * 2 + [POS] * 5)
    # n / (k * n_c): 8/3, 8/6, 8/15
    assert weights == pytest.approx([8 / 3, 8 / 6, 8 / 15])
    # an absent class gets weight 1 (its loss term never occurs anyway)
    assert class_weights([NEG, POS, POS, POS]) == pytest.approx([2.0, 1.0, 4 / 6])


def test_plots_write_png(tmp_path: Path) -> None:
    plot_confusion_matrix([[5, 1, 0], [2, 7, 1], [0, 1, 9]], tmp_path / "cm.png", "title")
    history = [
        {"loss": 1.1, "step": 10},
        {"loss": 0.9, "step": 20},
        {"eval_macro_recall": 0.6, "step": 20},
        {"loss": 0.7, "step": 30},
        {"eval_macro_recall": 0.7, "step": 30},
    ]
    plot_training_curve(history, tmp_path / "curve.png")
    for name in ("cm.png", "curve.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
