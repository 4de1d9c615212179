"""Label mapping rules and data loading of trainer.data (pure logic + files written to tmp_path)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from trainer.data import (
    LABELS,
    DataError,
    clean_text,
    infer_scheme,
    load_labelled,
    normalise_labels,
    parse_label_map,
)

NEG, NEU, POS = range(3)


def names(ids: list[int]) -> list[str]:
    return [LABELS[i] for i in ids]


# ---------------------------------------------------------------- label rules


def test_label_names_and_aliases_any_case() -> None:
    raw = ["negative", "Neutral", "POSITIVE", "neg", "neu", "pos", "very negative", "Very Positive", " pos "]
    expected = ["negative", "neutral", "positive"] * 2 + ["negative", "positive", "positive"]
    assert names(normalise_labels(raw)) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([0, 1, 2, 1], [NEG, NEU, POS, NEU]),  # 0/1/2
        (["0", "2", "1"], [NEG, POS, NEU]),  # CSV gives strings
        ([0.0, 2.0, 1.0], [NEG, POS, NEU]),  # pandas-style floats
        ([0, 1, 1, 0], [NEG, POS, POS, NEG]),  # binary (IMDb / SST-2)
        ([1, 2, 3, 4, 5], [NEG, NEG, NEU, POS, POS]),  # star ratings
        (["5", "3", "1"], [POS, NEU, NEG]),
    ],
)
def test_integer_rules(raw: list[object], expected: list[int]) -> None:
    assert normalise_labels(raw) == expected


def test_scheme_is_inferred_per_column() -> None:
    assert infer_scheme(["negative", "positive"]) == "names"
    assert infer_scheme([0, 1]) == "binary"
    assert infer_scheme([0, 1, 2]) == "three"
    assert infer_scheme([1, 2]) == "three"  # within {0,1,2}: read as 0/1/2 (--label-scheme stars to override)
    assert infer_scheme([1, 3, 5]) == "stars"
    with pytest.raises(DataError, match="--label-map"):
        infer_scheme([0, 4, 7])


def test_forced_scheme_resolves_ambiguity() -> None:
    # A 3-class file without any "2" would read as binary; --label-scheme three keeps 1 = neutral.
    assert normalise_labels([0, 1, 1], scheme="three") == [NEG, NEU, NEU]
    assert normalise_labels([1, 2], scheme="stars") == [NEG, NEG]
    with pytest.raises(DataError, match="unknown label 3"):
        normalise_labels([0, 3], scheme="three")
    with pytest.raises(DataError, match="unknown label scheme"):
        normalise_labels([0], scheme="quinary")


def test_label_map_applies_first_then_rules() -> None:
    mapping = parse_label_map("bad=negative, meh=neutral ,GOOD=Positive")
    assert mapping == {"bad": "negative", "meh": "neutral", "good": "positive"}
    assert names(normalise_labels(["Bad", "meh", "good", "neutral"], mapping)) == [
        "negative",
        "neutral",
        "positive",
        "neutral",
    ]
    # Sentiment140-style polarity needs a map: 0/2/4 fits no built-in rule.
    assert normalise_labels([0, 2, 4], parse_label_map("0=negative,2=neutral,4=positive")) == [NEG, NEU, POS]


@pytest.mark.parametrize("spec", ["bad", "=negative", "bad=awful", " , "])
def test_bad_label_map(spec: str) -> None:
    with pytest.raises(DataError):
        parse_label_map(spec)


def test_unknown_label_names_the_row() -> None:
    with pytest.raises(DataError, match=r"unknown label 'mixed' \(row 2\)"):
        normalise_labels(["positive", "mixed"])


def test_clean_text_decodes_literal_escapes() -> None:
    assert clean_text("  I\\u2019m here\\u002c ok  ") == "I’m here, ok"
    assert clean_text("plain \\n text") == "plain \\n text"


# ---------------------------------------------------------------- loading files

ROWS: list[dict[str, object]] = [
    {"text": "great phone", "label": "positive"},
    {"text": "it is a phone", "label": "neutral"},
    {"text": "broke in a day", "label": "negative"},
]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_load_jsonl(tmp_path: Path) -> None:
    data = load_labelled(str(write_jsonl(tmp_path / "d.jsonl", ROWS)))
    assert data.texts == ["great phone", "it is a phone", "broke in a day"]
    assert data.labels == [POS, NEU, NEG]
    assert data.counts() == {"negative": 1, "neutral": 1, "positive": 1}


def test_load_csv_with_other_columns_and_stars(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "stars"])
        writer.writerows([["awful, returned it", "1"], ["fine", "3"], ["love it", "5"], ["ok-ish", "4"]])
    data = load_labelled(str(path), text_column="review", label_column="stars")
    assert data.labels == [NEG, NEU, POS, POS]


def test_load_parquet_binary(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "imdb.parquet"
    pq.write_table(pa.table({"text": ["bad film", "good film"], "label": [0, 1]}), path)
    data = load_labelled(str(path))
    assert data.texts == ["bad film", "good film"]
    assert data.labels == [NEG, POS]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found"):
        load_labelled(str(tmp_path / "nope.jsonl"))


def test_missing_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(DataError, match=r"column 'sentence' not found \(columns: text, label\)"):
        load_labelled(str(path), text_column="sentence")


def test_empty_split(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        load_labelled(str(path))


def test_unknown_label_in_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [*ROWS, {"text": "hmm", "label": "mixed"}])
    with pytest.raises(DataError, match=r"d\.jsonl: unknown label 'mixed' \(row 4\)"):
        load_labelled(str(path))


def test_bad_rows(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": "positive"}\n{not json\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_labelled(str(broken))
    no_text = write_jsonl(tmp_path / "no_text.jsonl", [{"text": None, "label": "positive"}])
    with pytest.raises(DataError, match="row 1 has no text"):
        load_labelled(str(no_text))
    other = tmp_path / "data.txt"
    other.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"unsupported file type \.txt"):
        load_labelled(str(other))


def test_validation_split_and_subset_are_stratified_and_disjoint(tmp_path: Path) -> None:
    from trainer.train import TrainConfig, load_data

    # i % 4 % 3 cycles negative, neutral, positive, negative: 100 / 50 / 50 rows
    rows: list[dict[str, object]] = [{"text": f"text {i}", "label": LABELS[i % 4 % 3]} for i in range(200)]
    path = str(write_jsonl(tmp_path / "train.jsonl", rows))
    train, sets = load_data(TrainConfig(base_model="minilm", train=[path], output="o"))
    [validation] = sets.values()
    assert (len(train), len(validation)) == (190, 10)
    assert validation.counts()["negative"] == 5  # half of the rows, half of the held-out set
    assert not set(train.texts) & set(validation.texts)
    config = TrainConfig(base_model="minilm", train=[path, path], output="o", max_train_samples=40)
    train, _ = load_data(config)
    assert len(train) == 40 and train.counts()["negative"] == 20
    with pytest.raises(DataError, match="too few training rows"):
        load_data(TrainConfig(base_model="minilm", train=[path], output="o", validation_fraction=1.0))


def test_several_validation_sets_keep_their_names_and_rows_remember_their_file(tmp_path: Path) -> None:
    from trainer.train import TrainConfig, load_data

    tweets = write_jsonl(tmp_path / "tweets" / "train.jsonl", [{"text": "a", "label": "neutral"}] * 3)
    reviews = write_jsonl(tmp_path / "reviews" / "train.jsonl", [{"text": "b", "label": "positive"}] * 2)
    val_a = write_jsonl(tmp_path / "tweets" / "validation.jsonl", [{"text": "c", "label": "negative"}])
    val_b = write_jsonl(tmp_path / "reviews" / "validation.jsonl", [{"text": "d", "label": "neutral"}] * 2)
    config = TrainConfig(
        base_model="minilm",
        train=[str(tweets), str(reviews)],
        validation=[str(val_a), str(val_b)],
        output="o",
    )
    train, sets = load_data(config)
    assert list(sets) == ["tweets/validation", "reviews/validation"]
    assert [len(d) for d in sets.values()] == [1, 2]
    assert train.groups == [str(tweets)] * 3 + [str(reviews)] * 2


def test_group_column_is_kept_as_text(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"text": "a", "label": "positive", "stars": 5, "domain": "yelp"},
        {"text": "b", "label": "negative", "stars": 1},
    ]
    path = str(write_jsonl(tmp_path / "r.jsonl", rows))
    assert load_labelled(path, group_column="stars").groups == ["5", "1"]
    assert load_labelled(path, group_column="domain").groups == ["yelp", "(none)"]
    with pytest.raises(DataError, match="column 'shop' not found"):
        load_labelled(path, group_column="shop")
