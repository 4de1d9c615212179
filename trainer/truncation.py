"""How a text longer than the model's limit is cut: the setting a model folder carries (truncation.json).

Reviews put their verdict at the end ("...but it broke after a week"), so the default keeps the head *and*
the tail of a long text: the first quarter of the token budget from the start, the rest from the end (the
[CLS] token opens the head, the [SEP] token closes the tail). A text within the limit is left whole, so
tweets are not affected. "right" is transformers' own cut (keep the first max_length tokens).

The worker reads the same file and cuts the same way; it has its own copy of this rule because trainer and
worker share no code (the model folder is their contract).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FILE = "truncation.json"
STRATEGIES: tuple[str, ...] = ("head+tail", "right")
DEFAULT_STRATEGY = "head+tail"
# Enough characters on each side for max_length tokens of any real text (a token is rarely over 8 chars):
# cutting the middle of a huge text before tokenizing bounds the tokenizer's work without changing the ids.
CHARS_PER_TOKEN_BOUND = 16


def head_tokens(max_length: int) -> int:
    return max(1, max_length // 4)


def cut(ids: Sequence[int], max_length: int, strategy: str) -> list[int]:
    """ids (special tokens included) cut to at most max_length by the strategy."""
    if len(ids) <= max_length:
        return list(ids)
    if strategy == "right":
        return [*ids[: max_length - 1], ids[-1]]
    head = head_tokens(max_length)
    return [*ids[:head], *ids[len(ids) - (max_length - head) :]]


def precut(text: str, max_length: int) -> str:
    """The text, with its middle dropped when it is far longer than max_length tokens could ever cover."""
    keep = CHARS_PER_TOKEN_BOUND * max_length
    if len(text) <= 2 * keep:
        return text
    return text[:keep] + " " + text[-keep:]


def encode(
    tokenizer: Any, texts: Sequence[str], max_length: int, strategy: str
) -> dict[str, list[list[int]]]:
    """Tokenize (unpadded) and cut each row: the columns a model takes (input_ids, attention_mask, ...)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown truncation {strategy!r}: use {' or '.join(STRATEGIES)}")
    if strategy == "right":
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        return {k: [list(v) for v in column] for k, column in enc.items()}
    enc = tokenizer([precut(t, max_length) for t in texts], truncation=False, verbose=False)
    return {k: [cut(v, max_length, strategy) for v in column] for k, column in enc.items()}


def write(folder: Path, max_length: int, strategy: str) -> None:
    setting = {"max_length": max_length, "strategy": strategy, "head_tokens": head_tokens(max_length)}
    (folder / FILE).write_text(json.dumps(setting, indent=2) + "\n")


def read(folder: Path) -> tuple[int, str] | None:
    """(max_length, strategy) the folder was trained with; None for a folder from before this file existed.
    A file that cannot be followed raises ValueError: scoring such a folder some other way would mislead."""
    path = folder / FILE
    if not path.exists():
        return None
    try:
        setting = json.loads(path.read_text())
        max_length, strategy = int(setting["max_length"]), str(setting["strategy"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable ({type(exc).__name__})") from None
    if strategy not in STRATEGIES or not 8 <= max_length <= 4096:
        raise ValueError(f"{path}: unknown strategy {strategy!r} or max_length {max_length}")
    return max_length, strategy
