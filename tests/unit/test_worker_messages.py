"""Message models: JSON Schema files up to date, time parsing, scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.__main__ import main
from worker.messages import Scores, created_at_ms, json_schemas, rfc3339_ms, schema_text

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "worker" / "schemas"


def test_schema_files_are_up_to_date() -> None:
    expected = {name: schema_text(schema) for name, schema in json_schemas().items()}
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == expected, "run: python -m worker schema --write worker/schemas"


def test_schema_cli_writes_the_same_files(tmp_path: Path) -> None:
    main(["schema", "--write", str(tmp_path)])
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")
    }


def test_schema_cli_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    main(["schema"])
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == set(json_schemas())
    assert printed["review.schema.json"]["properties"]["rating"]["anyOf"][0]["maximum"] == 5


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2024-05-01T12:00:00Z", 1714564800000),
        ("2024-05-01T14:00:00+02:00", 1714564800000),
        ("2024-05-01T12:00:00.250Z", 1714564800250),
        (1714564800000, 1714564800000),
        (0, 0),
    ],
)
def test_created_at_ms(value: str | int, ms: int) -> None:
    assert created_at_ms(value) == ms


@pytest.mark.parametrize(
    "value", ["2024-05-01", "2024-05-01T12:00:00", "soon", -1, 2**60, "1969-12-31T00:00:00Z"]
)
def test_created_at_rejects(value: str | int) -> None:
    with pytest.raises(ValueError):
        created_at_ms(value)


def test_rfc3339_round_trip() -> None:
    assert rfc3339_ms(1714564800250) == "2024-05-01T12:00:00.250Z"
    assert created_at_ms(rfc3339_ms(1714564800250)) == 1714564800250


@pytest.mark.parametrize(
    ("scores", "label", "score"),
    [
        ((0.7, 0.2, 0.1), "negative", -0.6),
        ((0.1, 0.8, 0.1), "neutral", 0.0),
        ((0.05, 0.15, 0.8), "positive", 0.75),
        ((0.4, 0.4, 0.2), "negative", 0.2 - 0.4),  # a tie goes to the first in LABELS order
        ((0.2, 0.4, 0.4), "neutral", 0.2),
        ((0.3, 0.2, 0.5), "positive", 0.2),
    ],
)
def test_scores_label_and_score(scores: tuple[float, float, float], label: str, score: float) -> None:
    s = Scores(negative=scores[0], neutral=scores[1], positive=scores[2])
    assert s.label == label
    assert s.score == pytest.approx(score)


def test_score_is_clamped_to_unit_range() -> None:
    assert Scores(negative=0.0, neutral=0.0, positive=1.0000001).score == 1.0
