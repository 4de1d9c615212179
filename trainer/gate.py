"""PURE: the promotion gate. A candidate replaces the champion only if, on the same rows, it
- loses at most MAX_MACRO_RECALL_DROP of macro recall on every validation set,
- loses at most MAX_CLASS_RECALL_DROP of recall on any class of any validation set, and
- is more accurate than the champion on the held-out corrections (the reason it was trained).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_MACRO_RECALL_DROP = 0.005  # 0.5 point
MAX_CLASS_RECALL_DROP = 0.02  # 2 points
FEEDBACK = "held_out_feedback"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    detail: str


def gate(
    champion: dict[str, dict[str, Any]],
    candidate: dict[str, dict[str, Any]],
    *,
    max_macro_drop: float = MAX_MACRO_RECALL_DROP,
    max_class_drop: float = MAX_CLASS_RECALL_DROP,
) -> list[Check]:
    """Checks over metrics per set ({set name: trainer.evaluate.classification_metrics(...)}); the held-out
    corrections are the set named FEEDBACK. Every set the champion was scored on must be there for both."""
    checks: list[Check] = []
    for name in sorted(k for k in champion if k != FEEDBACK):
        old, new = champion[name], candidate[name]
        drop = old["macro_recall"] - new["macro_recall"]
        checks.append(
            Check(
                f"{name}: macro recall",
                drop <= max_macro_drop + 1e-12,
                f"{old['macro_recall']:.4f} -> {new['macro_recall']:.4f} "
                f"({-drop * 100:+.1f} pt, allowed -{max_macro_drop * 100:.1f})",
            )
        )
        worse = [
            (label, old["per_class"][label]["recall"], new["per_class"][label]["recall"])
            for label in old["classes_present"]
            if old["per_class"][label]["recall"] - new["per_class"][label]["recall"] > max_class_drop + 1e-12
        ]
        checks += [
            Check(
                f"{name}: {label} recall",
                False,
                f"{r_old:.4f} -> {r_new:.4f} ({(r_new - r_old) * 100:+.1f} pt, "
                f"allowed -{max_class_drop * 100:.0f})",
            )
            for label, r_old, r_new in worse
        ]
        if not worse:
            checks.append(
                Check(
                    f"{name}: class recalls", True, f"no class drops more than {max_class_drop * 100:.0f} pt"
                )
            )
    fb_old, fb_new = champion.get(FEEDBACK), candidate.get(FEEDBACK)
    if fb_old is None or fb_new is None:
        checks.append(Check("held-out feedback", False, "no held-out corrections to judge the candidate on"))
    else:
        checks.append(
            Check(
                "held-out feedback: accuracy",
                fb_new["accuracy"] > fb_old["accuracy"],
                f"{fb_old['accuracy']:.4f} -> {fb_new['accuracy']:.4f} on {fb_new['n']} corrections "
                "(must improve)",
            )
        )
    return checks


def passed(checks: list[Check]) -> bool:
    return bool(checks) and all(c.passed for c in checks)
