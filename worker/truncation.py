"""How the worker cuts a text longer than the model's limit: as the model folder's truncation.json says.

The trainer writes that file with the setting the model was trained with, so the worker cuts texts the same
way (trainer/truncation.py holds the trainer's side of this contract; the two share no code):

* "head+tail": keep the first max_length // 4 tokens and the last rest (a review's verdict is often at the
  end); a text within the limit is left whole, so tweets cost nothing extra;
* "right": keep the first max_length tokens (a folder without truncation.json was trained that way).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

FILE = "truncation.json"
STRATEGIES: tuple[str, ...] = ("head+tail", "right")
DEFAULT_MAX_LENGTH = 128
# Characters kept on each side of a huge text before tokenizing: far more than max_length tokens of real text
# (a token is rarely over 8 characters), so the cut ids are the same and the tokenizer's work is bounded.
CHARS_PER_TOKEN_BOUND = 16


class TruncationError(ValueError):
    """A truncation.json the worker cannot follow; the folder is refused rather than served differently."""


def read(folder: Path) -> tuple[int, str] | None:
    """(max_length, strategy) from the folder's truncation.json; None when the folder has none."""
    path = folder / FILE
    if not path.exists():
        return None
    try:
        setting = json.loads(path.read_text())
        max_length, strategy = int(setting["max_length"]), str(setting["strategy"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TruncationError(f"{path}: unreadable ({type(exc).__name__})") from None
    if strategy not in STRATEGIES or not 8 <= max_length <= 4096:
        raise TruncationError(f"{path}: unknown strategy {strategy!r} or max_length {max_length}")
    return max_length, strategy


def head_tokens(max_length: int) -> int:
    return max(1, max_length // 4)


def cut(ids: Sequence[int], max_length: int) -> list[int]:
    """Head and tail of ids (special tokens included, so [CLS] opens and [SEP] closes the result)."""
    if len(ids) <= max_length:
        return list(ids)
    head = head_tokens(max_length)
    return [*ids[:head], *ids[len(ids) - (max_length - head) :]]


def precut(text: str, max_length: int) -> str:
    keep = CHARS_PER_TOKEN_BOUND * max_length
    if len(text) <= 2 * keep:
        return text
    return text[:keep] + " " + text[-keep:]
