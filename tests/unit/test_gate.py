"""The promotion gate on metrics per set: a regression refuses; a gain on held-out corrections is required."""

from __future__ import annotations

from typing import Any

from trainer.gate import FEEDBACK, gate, passed


def metrics(
    macro: float, recalls: tuple[float, float, float], accuracy: float = 0.7, n: int = 100
) -> dict[str, Any]:
    names = ("negative", "neutral", "positive")
    return {
        "n": n,
        "macro_recall": macro,
        "accuracy": accuracy,
        "classes_present": list(names),
        "per_class": {k: {"recall": r} for k, r in zip(names, recalls, strict=True)},
    }


def sets(
    tweets: float, reviews: float, fb_acc: float | None, recalls: tuple[float, float, float] = (0.7, 0.7, 0.7)
) -> dict[str, Any]:
    out = {"tweets": metrics(tweets, recalls), "reviews": metrics(reviews, recalls)}
    if fb_acc is not None:
        out[FEEDBACK] = metrics(fb_acc, recalls, accuracy=fb_acc, n=20)
    return out


def failed(checks: list[Any]) -> list[str]:
    return [c.name for c in checks if not c.passed]


def test_a_candidate_that_holds_validation_and_fixes_the_corrections_passes() -> None:
    checks = gate(sets(0.71, 0.70, 0.40), sets(0.706, 0.72, 0.80))  # -0.4 pt is within the 0.5 allowed
    assert passed(checks) and len(checks) == 5


def test_a_macro_recall_drop_over_half_a_point_on_any_set_refuses() -> None:
    checks = gate(sets(0.71, 0.70, 0.40), sets(0.704, 0.75, 0.90))
    assert failed(checks) == ["tweets: macro recall"]


def test_a_class_that_drops_over_two_points_refuses_even_if_the_average_holds() -> None:
    checks = gate(sets(0.70, 0.70, 0.4), sets(0.70, 0.70, 0.9, recalls=(0.75, 0.67, 0.70)))
    assert failed(checks) == ["reviews: neutral recall", "tweets: neutral recall"]


def test_no_gain_on_the_held_out_corrections_refuses() -> None:
    assert failed(gate(sets(0.7, 0.7, 0.6), sets(0.7, 0.7, 0.6))) == ["held-out feedback: accuracy"]
    assert failed(gate(sets(0.7, 0.7, None), sets(0.7, 0.7, None))) == ["held-out feedback"]


def test_thresholds_can_be_set() -> None:
    checks = gate(sets(0.71, 0.70, 0.4), sets(0.69, 0.70, 0.9), max_macro_drop=0.03)
    assert passed(checks)
