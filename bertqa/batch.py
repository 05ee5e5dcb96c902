"""Bulk QA with Ray Data: the questions of a file answered by a pool of model actors.

    pairs (driver) -> rows of `batch` questions -> map_batches(QAActor, ActorPoolStrategy(N))
                   -> answers streamed back in file order -> JSONL, and EM/F1 for SQuAD files

Each actor loads the model once (a prepared directory: about a second) and answers each row
with one QAModel.answer_batch call over that row's questions, exactly as `bertqa eval --batch
B` calls it over the same questions: the rows are the eval's chunks, made in the driver, so no
Ray batch boundary can regroup them, and the answers are the single-process eval's (with
batch 1, the default, each question is answered alone). A row's latency is timed around that
call, as the eval times it. SQuAD v2.0 files get the eval's no-answer score and threshold.

The driver holds the pairs and the answers (text, not tensors); Ray moves rows of text to the
actors through its object store. The caller connects to Ray first (bertqa.ray_cluster).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bertqa.data.pairs import QAPair
from bertqa.eval.compare import Run, _prediction, load_average

COLUMNS = ("chunk", "position", "id", "question", "answer", "score", "start", "end",
           "no_answer_score", "latency_ms", "actor")


class QAActor:
    """A Ray Data actor: one model, answering rows of questions (one answer_batch call a row)."""

    def __init__(self, load_kwargs: dict, v2: bool):
        import bertqa
        t0 = time.perf_counter()
        self.qa = bertqa.load(**load_kwargs)
        self.load_s = time.perf_counter() - t0
        self.v2 = v2
        self.decode = self.qa.options.decode
        # v2: [null answer, best span] for every question, as bertqa eval asks
        self.options, self.top_k = ((self.qa.options.with_decode(allow_no_answer=True, null_threshold=-math.inf), 2)
                                    if v2 else (None, 1))
        self.warm = False
        header = self.qa.header()
        self.info = json.dumps({"model": header["model"], "target": header["target"],
                                "precision": header["precision"], "quantization": header["quantization"],
                                "backend": header["linear backend"],
                                "attention": header["attention"], "threads": header["threads"],
                                "actor_load_s": round(self.load_s, 3)})

    def __call__(self, batch: dict) -> dict:
        out = {c: [] for c in COLUMNS}
        for chunk, ids, questions, contexts in zip(batch["chunk"], batch["ids"], batch["questions"],
                                                   batch["contexts"]):
            questions, contexts = [str(q) for q in questions], [str(c) for c in contexts]
            if not self.warm:                  # as the eval: one untimed call first
                self.qa.answer_batch(questions[:1], contexts[:1])
                self.warm = True
            t0 = time.perf_counter()
            results = self.qa.answer_batch(questions, contexts, top_k=self.top_k, options=self.options)
            latency_ms = 1000.0 * (time.perf_counter() - t0) / len(questions)
            for position, (qid, question, answers) in enumerate(zip(ids, questions, results)):
                text, na = _prediction(answers, self.decode.allow_no_answer, self.decode.null_threshold, self.v2)
                best = answers[1] if self.v2 and len(answers) > 1 and text else answers[0]
                row = dict(chunk=int(chunk), position=position, id=str(qid), question=question,
                           answer=text, score=float(best.score), start=best.start if text else -1,
                           end=best.end if text else -1, no_answer_score=float(na),
                           latency_ms=latency_ms, actor=self.info)
                for c in COLUMNS:
                    out[c].append(row[c])
        return {c: np.asarray(v) for c, v in out.items()}


@dataclass
class BulkResult:
    rows: list[dict]                  # one per question, in file order (COLUMNS, less 'actor')
    wall_s: float                     # from the first row sent to the last answer back
    actors: int
    batch: int
    info: dict = field(default_factory=dict)

    @property
    def questions_per_s(self) -> float:
        return len(self.rows) / self.wall_s if self.wall_s else 0.0


def cluster_cpus() -> int:
    import ray
    return int(ray.cluster_resources().get("CPU", 1))


def answer_pairs(pairs: Sequence[QAPair], load_kwargs: dict, v2: bool = False, actors: int | None = None,
                 actor_cpus: float = 1.0, batch: int = 1, rows_per_call: int = 4,
                 progress: bool = True) -> BulkResult:
    """Answer `pairs` on the connected Ray with `actors` model actors (default: as many as the
    cluster's CPUs hold), `batch` questions per answer_batch call."""
    from ray import data as ray_data
    assert batch >= 1 and rows_per_call >= 1 and actor_cpus > 0, (batch, rows_per_call, actor_cpus)
    actors = actors or max(1, int(cluster_cpus() // actor_cpus))
    ctx = ray_data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.execution_options.preserve_order = True     # answers stream back in file order
    rows = [{"chunk": k, "ids": [p.id for p in chunk], "questions": [p.question for p in chunk],
             "contexts": [p.context for p in chunk]}
            for k, chunk in enumerate(pairs[i:i + batch] for i in range(0, len(pairs), batch))]
    ds = ray_data.from_items(rows, override_num_blocks=min(len(rows), 4 * actors))
    ds = ds.map_batches(QAActor, fn_constructor_args=(load_kwargs, v2), batch_size=rows_per_call,
                        batch_format="numpy", compute=ray_data.ActorPoolStrategy(size=actors),
                        num_cpus=actor_cpus)
    load_avg = load_average()
    t0 = time.perf_counter()
    answered = list(ds.iter_rows())
    wall_s = time.perf_counter() - t0
    answered.sort(key=lambda r: (r["chunk"], r["position"]))
    assert [r["id"] for r in answered] == [p.id for p in pairs], "an answer is missing or repeated"
    info = {**json.loads(answered[0]["actor"]), "load_avg_1m": [load_avg, load_average()]}
    return BulkResult([{k: v for k, v in r.items() if k != "actor"} for r in answered], wall_s,
                      actors, batch, info)


def eval_run(result: BulkResult, v2: bool) -> Run:
    """The answers as a bertqa.eval Run, for the eval's scoring and table."""
    i = result.info
    label = f"{i['target']} {i['precision']} (ray, {result.actors} actors)"
    run = Run(label, i["target"], i["precision"], i["quantization"], {}, batch=result.batch,
              info={**{k: v for k, v in i.items() if k not in ("target", "precision", "quantization")},
                    "ray_actors": result.actors,
                    "ray_wall_s": result.wall_s, "ray_questions_per_s": result.questions_per_s})
    for r in result.rows:
        run.predictions[r["id"]] = r["answer"]
        if v2:
            run.na_scores[r["id"]] = r["no_answer_score"]
        run.latencies_ms.append(r["latency_ms"])
    run.seconds = sum(run.latencies_ms) / 1000.0
    return run


def write_jsonl(path: str | Path, rows: Sequence[dict], v2: bool) -> None:
    """One JSON object a line: id, question, answer, score, start, end (v2: no_answer_score)."""
    keys = ("id", "question", "answer", "score", "start", "end") + (("no_answer_score",) if v2 else ())
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            obj = {k: (int(r[k]) if k in ("start", "end") else r[k]) for k in keys}
            if v2 and not math.isfinite(obj["no_answer_score"]):
                obj["no_answer_score"] = None          # JSON has no Infinity
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
