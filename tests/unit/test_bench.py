"""Pure parts of the benchmark: traffic building, percentiles, latency matching, targets, macro recall."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # bench/ is not an installed package; the CLI runs it from the repo root
    sys.path.insert(0, str(REPO))

from bench import stats, traffic  # noqa: E402
from bench.inference import recall_macro  # noqa: E402
from worker.decode import decode  # noqa: E402
from worker.messages import Record, Rejected  # noqa: E402

SOCIAL = [
    traffic.Row(text=f"tweet {i}", label="neutral", kind="social_post", origin="twitter") for i in range(5)
]
REVIEWS = [
    traffic.Row(text=f"review {i}", label="positive", kind="review", origin="sst", label5="very positive")
    for i in range(3)
]


def test_build_messages_is_seeded_and_mixes_kinds() -> None:
    a = traffic.build_messages(SOCIAL, REVIEWS, 200, seed=1, run_id="r")
    assert a == traffic.build_messages(SOCIAL, REVIEWS, 200, seed=1, run_id="r")
    assert a != traffic.build_messages(SOCIAL, REVIEWS, 200, seed=2, run_id="r")
    assert [m["id"] for m in a] == [f"r-{i}" for i in range(200)]
    kinds = [m["kind"] for m in a]
    assert 20 < kinds.count("review") < 100  # about 30%
    assert all(m["rating"] == 5 for m in a if m["kind"] == "review")


def test_built_messages_are_valid_worker_input() -> None:
    for i, msg in enumerate(traffic.build_messages(SOCIAL, REVIEWS, 50, seed=0)):
        record = Record(topic="t", partition=0, offset=i, key=None, value=traffic.encode(msg))
        assert not isinstance(decode(record, topic_kinds={}, max_bytes=65536), Rejected)


def test_build_messages_needs_both_kinds() -> None:
    assert traffic.build_messages([], [], 0) == []
    with pytest.raises(traffic.TrafficError):
        traffic.build_messages(SOCIAL, [], 3)


def test_load_rows_reports_a_missing_file_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(traffic.TrafficError, match="data set file missing"):
        traffic.load_rows(tmp_path, per_source=10)


def test_load_rows_reads_each_source_up_to_the_limit(tmp_path: Path) -> None:
    for folder, name, _, _ in traffic.SOURCES:
        (tmp_path / folder).mkdir()
        lines = [json.dumps({"text": f"{folder} {i}", "label": "neutral"}) for i in range(5)]
        (tmp_path / folder / name).write_text(
            "\n".join([*lines, "", json.dumps({"text": " ", "label": "x"})])
        )
    social, reviews = traffic.load_rows(tmp_path, per_source=3)
    assert len(social) == 6 and len(reviews) == 3
    assert {r.kind for r in reviews} == {"review"}


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([1.0], 99, 1.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.5), ([0.0, 10.0], 99, 9.9), (list(range(101)), 95, 95.0)],
)
def test_percentile_interpolates_like_numpy(values: list[float], q: float, expected: float) -> None:
    assert stats.percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(stats.percentile([], 50))


def test_match_latencies_pairs_by_input_position_and_counts_missing() -> None:
    produced = {("a", 0, 0): 1000.0, ("a", 0, 1): 1010.0, ("b", 0, 0): 1020.0}
    results = {("a", 0, 0): 1100.0, ("b", 0, 0): 1050.0, ("z", 0, 0): 5.0}
    latencies, missing = stats.match_latencies(produced, results)
    assert sorted(latencies) == [30.0, 100.0]
    assert missing == 1


def test_throughput_needs_a_positive_span() -> None:
    assert stats.throughput(100, 1000.0, 3000.0) == 50.0
    assert math.isnan(stats.throughput(100, 1000.0, 1000.0))


def test_targets_compare_each_figure_with_its_goal() -> None:
    rows = stats.targets(
        e2e_vs_model=0.9,
        e2e_vs_baseline=2.0,
        p99_at_half_ms=200.0,
        max_wait_ms=50,
        batch_inference_ms=100.0,
        int8_speedup=1.6,
        int8_recall_loss=0.006,
    )
    met = {r["name"]: r["met"] for r in rows}
    assert list(met.values()) == [True, False, True, True, False]
    assert rows[2]["target"] == 250.0
    assert rows[4]["value"] == pytest.approx(0.6)


def test_a_nan_figure_never_meets_its_target() -> None:
    rows = stats.targets(
        e2e_vs_model=math.nan,
        e2e_vs_baseline=4.5,
        p99_at_half_ms=math.nan,
        max_wait_ms=50,
        batch_inference_ms=1,
    )
    assert [r["met"] for r in rows] == [False, True, False]


def test_recall_macro_averages_over_true_classes() -> None:
    truth = ["negative", "negative", "positive", "neutral"]
    predicted = ["negative", "neutral", "positive", "positive"]
    assert recall_macro(truth, predicted) == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_md_table_formats_numbers() -> None:
    table = stats.md_table(["a", "b"], [[1234.5678, math.nan], ["x", 3]], digits=1)
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1,234.6 | n/a |", "| x | 3 |"]


def test_the_strongest_reference_is_the_fastest_precision_a_user_could_serve() -> None:
    from bench.run import strongest_reference

    rows = [
        {"variant": "fp32", "batch": 1, "msg_s": 900.0},  # batch 1 is no batching at all: never the reference
        {"variant": "fp32", "batch": 32, "msg_s": 250.0},
        {"variant": "fp32", "batch": 64, "msg_s": 270.0},
        {"variant": "int8", "batch": 32, "msg_s": 420.0},
        {"variant": "bf16", "batch": 32, "msg_s": 560.0},
        {"variant": "bf16 (auto)", "batch": 16, "msg_s": 600.0},
    ]
    variants = {"int8": {"recall_loss": 0.01}, "bf16": {"recall_loss": 0.0}}
    best = strongest_reference(rows, variants, "bf16", trained=True)
    assert (best["precision"], best["batch"], best["msg_s"]) == ("bf16", 16, 600.0)
    # The worker runs fp32 here: bf16 still counts (no recall loss), int8 does not (1 point lost).
    fp32_worker = strongest_reference(rows[:5], variants, "fp32", trained=True)
    assert (fp32_worker["precision"], fp32_worker["batch"]) == ("bf16", 32)
    assert fp32_worker["considered"] == ["bf16", "fp32"]
    # An untrained head's recall means nothing: then only fp32 and the worker's own precision count.
    assert strongest_reference(rows[:5], variants, "fp32", trained=False)["precision"] == "fp32"
    assert (
        strongest_reference(rows[:5], {"int8": {"recall_loss": 0.0}}, "fp32", trained=True)["precision"]
        == "int8"
    )
