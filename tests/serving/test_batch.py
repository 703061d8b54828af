"""``clinical-mlops score``: a file of requests scored through the Predictor, audited."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.errors import InputInvalid, ServingError, StoreUnavailable
from clinical_mlops.ledger import Ledger
from clinical_mlops.serving import PredictionRequest, Predictor
from clinical_mlops.serving import batch as batch_module
from clinical_mlops.serving.batch import score_file


def _line(row: dict[str, Any], i: int, **kw: Any) -> str:
    item = {"subject_id": f"MRN-{i % 120}", "purpose": "direct_care", "setting": "icu"}
    return json.dumps(item | {"features": row} | kw)


def _ledger_size(served: dict[str, Any]) -> int:
    with Ledger.open(served["ws"]) as led:
        return led.size()


def test_a_file_is_scored_in_order_with_one_audit_record_per_request(
    served: dict[str, Any], tmp_path: Path
) -> None:
    rows = served["rows"]
    lines = [_line(rows[i % len(rows)], i) for i in range(130)]
    lines.insert(7, "")  # blank lines are skipped, line numbers stay the file's
    lines.append(_line(rows[0], 0, subject_id="MRN-UNKNOWN"))
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "results.jsonl"
    before = _ledger_size(served)
    seen: list[tuple[int, int]] = []
    summary = score_file(
        served["ws"], source, out, requester="t", progress=lambda d, n: seen.append((d, n))
    )
    results = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert summary.rows == len(results) == 131
    assert [r["line"] for r in results] == [*range(1, 8), *range(9, 133)]
    assert summary.by_status["scored"] == 130 and summary.by_status["refused"] == 1
    assert results[-1]["refusal"]["code"] == "unknown_subject"
    assert seen[-1] == (131, 131)
    # one inference record per scored request, each its own, in file order
    seqs = [r["audit_seq"] for r in results]
    assert len(set(seqs)) == len(seqs) and seqs[:130] == sorted(seqs[:130])
    assert _ledger_size(served) - before == 131 + summary.escalated
    with Ledger.open(served["ws"]) as led:
        first = led.read(results[0]["audit_seq"])
        assert first.entry.type == "inference"
        assert first.payload["request_id"] == results[0]["request_id"]
    # the same numbers as the Predictor gives these requests directly
    with Predictor.open(served["ws"]) as p:
        direct = p.predict_many(
            [
                PredictionRequest(
                    subject_id=f"MRN-{i % 120}",
                    purpose="direct_care",
                    setting="icu",
                    features=rows[i % len(rows)],
                )
                for i in range(130)
            ],
            requester="t",
        )
    assert [r.probability for r in direct] == [r["probability"] for r in results[:130]]
    assert [r.conformal_set for r in direct] == [r["conformal_set"] for r in results[:130]]


def test_a_bad_file_is_refused_whole_naming_each_line_and_nothing_is_scored(
    served: dict[str, Any], tmp_path: Path
) -> None:
    rows = served["rows"]
    bad_age = dict(rows[1], age="old")
    source = tmp_path / "bad.jsonl"
    source.write_text(
        "\n".join(
            [
                _line(rows[0], 0),
                _line(bad_age, 1),
                "",
                '{"subject_id": "MRN-2"}',
                "not json",
                _line(rows[3], 3, request_id="same"),
                _line(rows[4], 4, request_id="same"),
                _line(rows[5], 5, purpose="marketing"),
            ]
        ),
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    before = _ledger_size(served)
    with pytest.raises(InputInvalid) as caught:
        score_file(served["ws"], source, out, requester="t")
    where = [p for p, _ in caught.value.problems]
    assert "line 2.features.age" in where
    assert {"line 4.purpose", "line 4.setting", "line 4.features"} <= set(where)
    assert any(p.startswith("line 5") for p in where)
    assert "line 7.request_id" in where  # the second use of the id
    assert "line 8.purpose" in where
    assert where == sorted(where, key=lambda p: int(p.split()[1].split(".")[0]))
    assert _ledger_size(served) == before and not out.exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputInvalid, match="holds no requests"):
        score_file(served["ws"], empty, out, requester="t")
    with pytest.raises(InputInvalid, match="cannot be read"):
        score_file(served["ws"], tmp_path / "missing.jsonl", out, requester="t")


def test_a_failure_part_way_keeps_the_results_already_audited(
    served: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = served["rows"]
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(_line(rows[i], i) for i in range(25)), encoding="utf-8")
    monkeypatch.setattr(batch_module, "MAX_BATCH", 10)
    calls = {"n": 0}
    real = Predictor.predict_many

    def flaky(self: Predictor, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise StoreUnavailable("database cannot be written now (disk full)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_many", flaky)
    out = tmp_path / "out.jsonl"
    with pytest.raises(ServingError, match="before line 11 are recorded") as caught:
        score_file(served["ws"], source, out, requester="t")
    assert "disk full" in str(caught.value) and "run the same command again" in str(caught.value)
    kept = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in kept] == list(range(1, 11))
    with Ledger.open(served["ws"]) as led:
        assert all(led.read(r["audit_seq"]).entry.type == "inference" for r in kept)
    # once the store is back, the same command finishes the file: the first ten are not
    # scored again, and their results are the ones they were given
    monkeypatch.setattr(Predictor, "predict_many", real)
    before = _ledger_size(served)
    summary = score_file(served["ws"], source, out, requester="t")
    assert summary.rows == 25 and summary.resumed == 10
    final = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in final] == list(range(1, 26))
    assert [{k: v for k, v in r.items() if k != "resumed"} for r in final[:10]] == kept
    assert all(r["resumed"] for r in final[:10]) and not any("resumed" in r for r in final[10:])
    assert _ledger_size(served) - before == 15 + sum(r["escalated"] for r in final[10:])
    assert not list(tmp_path.glob(".out.jsonl*"))  # no run record, lock or temporary file left


def test_score_command(
    served: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from clinical_mlops.cli import app
    from clinical_mlops.cli._common import run_guarded

    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(_line(served["rows"][i], i) for i in range(5)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    argv = ["score", str(source), "--out", str(out), "--no-explain", "--json"]
    monkeypatch.setattr(sys, "argv", ["clinical-mlops", *argv, "-w", str(served["ws"].root)])
    try:
        code = run_guarded(app)
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"] == 5 and doc["by_status"]["scored"] == 5
    results = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert all(r["contributions"] == [] for r in results)  # --no-explain


def test_a_request_id_reused_in_a_later_chunk_is_refused(
    served: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is checked in chunks (memory stays bounded); ids are compared across them."""
    monkeypatch.setattr(batch_module, "MAX_BATCH", 10)
    rows = served["rows"]
    lines = [_line(rows[i], i) for i in range(25)]
    lines[2] = _line(rows[2], 2, request_id="reused")
    lines[16] = _line(rows[16], 16, request_id="reused")
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(lines), encoding="utf-8")
    before = _ledger_size(served)
    with pytest.raises(InputInvalid) as caught:
        score_file(served["ws"], source, tmp_path / "out.jsonl", requester="t")
    assert caught.value.problems == [("line 17.request_id", "'reused' is used on line 3")]
    assert _ledger_size(served) == before and not (tmp_path / "out.jsonl").exists()
    lines[16] = _line(rows[16], 16, request_id="fresh")
    source.write_text("\n".join(lines), encoding="utf-8")
    summary = score_file(served["ws"], source, tmp_path / "out.jsonl", requester="t")
    assert summary.rows == 25 and summary.by_status["scored"] == 25
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["line"] for r in out] == list(range(1, 26))
    assert out[2]["request_id"] == "reused" and out[16]["request_id"] == "fresh"
