"""Labelled data: read JSONL / CSV / Parquet files or Hugging Face datasets, normalise labels to 3 classes.

Label rules (documented in the README; applied per data set, because the meaning of "1" depends on the
other values present):

* names: negative / neutral / positive (any case), also neg / neu / pos and "very negative" / "very positive";
* integers 0/1/2 (all values within {0, 1, 2}, 2 present): 0 negative, 1 neutral, 2 positive;
* binary integers (all values within {0, 1}): 0 negative, 1 positive (IMDb / SST-2 style);
* star ratings (all values within {1..5}, some 3, 4 or 5 present): 1-2 negative, 3 neutral, 4-5 positive;
* ``--label-map 'bad=negative,meh=neutral,good=positive'`` maps raw values first (keys compared as
  trimmed, case-folded strings); values it does not name must then follow the rules above.

``--label-scheme`` forces one of the integer rules when the values alone are ambiguous (a 3-class file
that happens to hold only 0 and 1 would otherwise read as binary).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
LABEL2ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
SCHEMES: tuple[str, ...] = ("auto", "names", "three", "binary", "stars")
FILE_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet")

_NAME_ALIASES: dict[str, str] = {
    "negative": "negative",
    "neg": "negative",
    "very negative": "negative",
    "neutral": "neutral",
    "neu": "neutral",
    "positive": "positive",
    "pos": "positive",
    "very positive": "positive",
}
_INT_SCHEMES: dict[str, dict[int, str]] = {
    "three": {0: "negative", 1: "neutral", 2: "positive"},
    "binary": {0: "negative", 1: "positive"},
    "stars": {1: "negative", 2: "negative", 3: "neutral", 4: "positive", 5: "positive"},
}
# TweetEval keeps literal escape sequences ("I\\u2019m") in its text; decode them so training text looks
# like the real tweets the worker will see.
_ESCAPE_RE = re.compile(r"\\u([0-9a-fA-F]{4})")


class DataError(ValueError):
    """Bad input data; the message is one line meant for the user."""


@dataclass(frozen=True)
class LabelledData:
    texts: list[str]
    labels: list[int]  # indices into LABELS
    source: str
    groups: list[str] | None = None  # per row: a --by field's value, or the training file it came from

    def __len__(self) -> int:
        return len(self.texts)

    def counts(self) -> dict[str, int]:
        return {name: self.labels.count(i) for i, name in enumerate(LABELS)}


# ---------------------------------------------------------------- pure label logic


def parse_label_map(spec: str | None) -> dict[str, str]:
    """Parse ``'bad=negative,meh=neutral,good=positive'`` into {raw (case-folded): canonical label}."""
    if not spec:
        return {}
    mapping: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        raw, sep, target = part.partition("=")
        key, value = raw.strip().casefold(), target.strip().casefold()
        if not sep or not key:
            raise DataError(f"bad --label-map entry {part.strip()!r}: expected RAW=LABEL")
        if value not in LABEL2ID:
            raise DataError(
                f"bad --label-map entry {part.strip()!r}: LABEL must be one of {', '.join(LABELS)}"
            )
        mapping[key] = value
    if not mapping:
        raise DataError("empty --label-map")
    return mapping


def _as_int(value: Any) -> int | None:
    """The integer a raw label stands for (1, 1.0, "1", " 1 "), or None when it is not an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+(\.0*)?", text):
            return int(float(text))
    return None


def _key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().casefold()


def infer_scheme(raw_labels: Iterable[Any]) -> str:
    """Pick the label rule for a whole column: 'names', 'three', 'binary' or 'stars'."""
    values = {_key(v) for v in raw_labels}
    ints = {_as_int(v) for v in values}
    if None in ints or not ints:
        return "names"
    if ints <= {0, 1}:
        return "binary"
    if ints <= {0, 1, 2}:
        return "three"
    if ints <= {1, 2, 3, 4, 5}:
        return "stars"
    shown = ", ".join(sorted(values, key=str)[:8])
    raise DataError(
        f"cannot tell what integer labels {{{shown}}} mean; pass --label-map (e.g. '0=negative,...')"
    )


def normalise_labels(
    raw_labels: Sequence[Any], label_map: dict[str, str] | None = None, scheme: str = "auto"
) -> list[int]:
    """Map a column of raw labels to indices into LABELS, or raise DataError naming the first bad value."""
    if scheme not in SCHEMES:
        raise DataError(f"unknown label scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    label_map = label_map or {}
    rest = [v for v in raw_labels if _key(v) not in label_map]
    if scheme == "auto":
        scheme = infer_scheme(rest) if rest else "names"
    int_rule = _INT_SCHEMES.get(scheme)
    out: list[int] = []
    for row, value in enumerate(raw_labels, start=1):
        key = _key(value)
        name = label_map.get(key)
        if name is None:
            if int_rule is not None:
                number = _as_int(value)
                name = int_rule.get(number) if number is not None else None
            else:
                name = _NAME_ALIASES.get(key)
        if name is None:
            rule = f"{scheme} labels" if int_rule is not None else "label names"
            raise DataError(f"unknown label {value!r} (row {row}) for {rule}; pass --label-map to map it")
        out.append(LABEL2ID[name])
    return out


def clean_text(text: str) -> str:
    """Decode literal \\uXXXX escapes and trim surrounding whitespace."""
    if "\\u" in text:
        text = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return text.strip()


def set_name(ref: str, taken: set[str]) -> str:
    """A short unique name for a data file in reports: folder and stem (tweeteval_sentiment/validation)."""
    path = Path(ref)
    name = f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem
    while name in taken:
        name += "'"
    taken.add(name)
    return name


# ---------------------------------------------------------------- I/O


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {n} is not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {n} is not a JSON object")
            rows.append(row)
    return rows


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise DataError(f"{path}: cannot read Parquet ({str(exc).splitlines()[0]})") from None
    return table.to_pylist()


def _read_hub(spec: str, default_split: str) -> list[dict[str, Any]]:
    """``hf:PATH[:CONFIG][@SPLIT]``, e.g. ``hf:cardiffnlp/tweet_eval:sentiment@validation``.

    ClassLabel columns are turned into their names so the normal label rules apply (imdb's neg/pos...).
    """
    body = spec.removeprefix("hf:")
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    split = split or default_split
    if not name:
        raise DataError(f"bad dataset name {spec!r}: expected hf:PATH[:CONFIG][@SPLIT]")
    try:
        import datasets

        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as exc:  # offline, unknown name, missing split: all end the same way for the user
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(
            f"cannot load Hugging Face dataset {spec!r} (is the hub reachable?): {first}"
        ) from None
    rows = ds.to_list()
    for column, feature in ds.features.items():
        if isinstance(feature, datasets.ClassLabel):
            for row in rows:
                if isinstance(row.get(column), int) and row[column] >= 0:
                    row[column] = feature.int2str(row[column])
    return rows


def read_rows(source: str, default_split: str = "train") -> list[dict[str, Any]]:
    if source.startswith("hf:"):
        return _read_hub(source, default_split)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"data file not found: {source} (use hf:NAME for a Hugging Face dataset)")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            return _read_jsonl(path)
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".parquet":
            return _read_parquet(path)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; use {', '.join(FILE_SUFFIXES)}")


def load_labelled(
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    label_map: dict[str, str] | None = None,
    scheme: str = "auto",
    default_split: str = "train",
    group_column: str | None = None,
) -> LabelledData:
    """Read one split and return cleaned texts with label indices; every problem is a one-line DataError.

    group_column: also keep each row's value of that column (as text) in ``groups``."""
    rows = read_rows(source, default_split)
    if not rows:
        raise DataError(f"{source}: no rows (empty split)")
    for column in (text_column, label_column, *([group_column] if group_column else [])):
        if column not in rows[0]:
            found = ", ".join(map(str, rows[0].keys()))
            raise DataError(f"{source}: column {column!r} not found (columns: {found})")
    texts: list[str] = []
    raw_labels: list[Any] = []
    for n, row in enumerate(rows, start=1):
        text, label = row.get(text_column), row.get(label_column)
        if not isinstance(text, str):
            raise DataError(f"{source}: row {n} has no text in column {text_column!r}")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataError(f"{source}: row {n} has no label in column {label_column!r}")
        texts.append(clean_text(text))
        raw_labels.append(label)
    try:
        labels = normalise_labels(raw_labels, label_map, scheme)
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None
    groups = None
    if group_column:
        groups = [str(v) if (v := row.get(group_column)) not in (None, "") else "(none)" for row in rows]
    return LabelledData(texts=texts, labels=labels, source=source, groups=groups)
