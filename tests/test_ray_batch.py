"""Bulk QA on Ray Data model actors: the same predictions, EM and F1 as the single-process eval on
200 SQuAD questions; `bertqa batch` over CoQA into JSONL against the session's Ray."""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import shared_file

ROOT = Path(__file__).resolve().parent.parent


def test_bulk_qa_equals_the_single_process_eval_on_200_questions(ray_local, qa_fp):
    from bertqa import batch as bulk
    from bertqa.data.pairs import read_pairs
    from bertqa.eval import compare
    pairs, squad = read_pairs(shared_file("squad-v1.1-dev-eval.json"), limit=200)
    assert squad is not None and len(squad.questions) == 200
    single = compare.answer_questions(qa_fp, squad.questions, v2=False, batch=1, progress=False)
    result = bulk.answer_pairs(pairs, {"model": "bundled", "target": "cpu", "precision": "fp"},
                               actors=2, progress=False)
    assert result.actors == 2 and [r["id"] for r in result.rows] == [q.id for q in squad.questions]
    run = bulk.eval_run(result, v2=False)
    assert run.predictions == single.predictions
    assert compare.score_run(run, squad) == compare.score_run(single, squad)
    assert len(run.latencies_ms) == 200 and all(ms > 0 for ms in run.latencies_ms)
    rows = compare.result_rows([single, run], squad)
    assert rows[1]["same_answer_pct"] == 100.0 and rows[1]["delta_f1"] == 0.0


def test_bertqa_batch_writes_jsonl_for_coqa_on_an_existing_cluster(ray_local, tmp_path):
    from bertqa.data.pairs import read_pairs
    data = shared_file("coqa-dev-v1.0-sample.json")
    pairs, _ = read_pairs(data)
    out = tmp_path / "preds.jsonl"
    address = ray_local.get_runtime_context().gcs_address
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "bertqa", "batch", "--model", "bundled", "--target", "cpu",
                           "--precision", "fp", "--data", str(data), "--ray-address", address,
                           "--actors", "1", "--batch", "4", "--no-progress", "--write-predictions", str(out)],
                          capture_output=True, text=True, timeout=150, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == [p.id for p in pairs]
    for r, p in zip(lines, pairs):
        assert r["question"] == p.question and p.context[r["start"]:r["end"]] == r["answer"]
    assert f"{len(pairs)} questions in" in proc.stderr
