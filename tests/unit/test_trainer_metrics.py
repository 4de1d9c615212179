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


def test_row_weights_balance_each_file_apart() -> None:
    from trainer.train import row_weights

    labels = [NEG, NEU, NEU, NEU, POS, POS, POS, NEG]
    groups = ["tweets"] * 4 + ["reviews"] * 4
    weights = row_weights(labels, groups)
    # tweets: 1 negative, 3 neutral -> 4/(2*1), 4/(2*3); reviews: 3 positive, 1 negative -> 4/(2*3), 4/(2*1)
    assert weights == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2.0])
    # each file keeps its share of the total weight
    assert sum(weights[:4]) == pytest.approx(4) and sum(weights[4:]) == pytest.approx(4)
    assert row_weights(labels, None) == pytest.approx([class_weights_of(labels)[y] for y in labels])


def class_weights_of(labels: list[int]) -> list[float]:
    from trainer.train import class_weights

    return class_weights(labels)


def test_mean_over_sets_counts_each_set_the_same() -> None:
    from trainer.evaluate import mean_over_sets

    big = classification_metrics([NEG, NEU, POS] * 10, [NEG, NEU, POS] * 10)  # all right
    small = classification_metrics([NEG, NEU, POS], [NEG, NEG, POS])  # neutral missed
    mean = mean_over_sets({"big": big, "small": small})
    assert mean["macro_recall"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert mean["accuracy"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert mean["min_class_recall"] == 0.0
    assert (mean["n"], mean["sets"]) == (33, ["big", "small"])


def test_token_buckets_and_breakdown_in_numeric_order() -> None:
    from trainer.evaluate import breakdown, token_bucket

    assert [token_bucket(n) for n in (1, 64, 65, 128, 129, 256, 300, 512, 513)] == [
        "<=64", "<=64", "65-128", "65-128", "129-256", "129-256", "257-512", "257-512", ">512",
    ]  # fmt: skip
    groups = ["10", "2", "1", "2", "(none)"]
    out = breakdown([NEG, POS, POS, NEG, NEU], [NEG, POS, NEG, NEG, NEU], groups)
    assert list(out) == ["1", "2", "10", "(none)"]
    assert out["2"]["n"] == 2 and out["2"]["accuracy"] == 1.0
    assert out["1"]["recall"] == {"positive": 0.0}
    assert list(breakdown([NEG] * 3, [NEG] * 3, [">512", "<=64", "65-128"])) == [
        "<=64", "65-128", ">512",
    ]  # fmt: skip
