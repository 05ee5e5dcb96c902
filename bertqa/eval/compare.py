"""Run configurations (target, precision, spec) over the same questions and score them.

All configurations are loaded first (together in memory), each is warmed up on a few questions
(untimed: first-call allocations, kernel selection, thread pools waking), and then they take
turns question by question -- `batch` questions per turn, the order of the configurations
rotating from one turn to the next -- so that a change in the machine's load falls on every
configuration alike and their latencies stay comparable. Latency is the wall time of one
`QAModel.answer_batch` call (tokenize, forward, decode) divided by the questions in it: with
batch 1 (the default) it is each question's own latency; with a larger batch it is amortized,
faster to collect, and the table says so. Batch 1 also keeps every answer independent of its
neighbours: with per-tensor activation scales an int8 forward shares one scale across a batch.

For SQuAD v2.0 each question also gets a "no answer" score, log(p_null / p_best span). The two
probabilities are softmaxes over one window, so this equals the decoder's null-minus-span logit
margin whenever both come from the same window (every context that fits in one window): the
best threshold reported for it is then the `--null-threshold` to use. CoQA files are scored
with CoQA's own F1 (bertqa.eval.coqa).
"""
from __future__ import annotations

import gc
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from bertqa.errors import BertQAError
from bertqa.data.squad import SquadQuestion, SquadSet
from bertqa.eval.squad_metric import score_v1, score_v2
from bertqa.quant.spec import PRESETS
from bertqa.attention import MODES as ATTENTION_MODES
from bertqa.targets import PRECISIONS, TARGETS


@dataclass(frozen=True)
class Config:
    target: str
    precision: str
    spec: str | None = None          # a QuantSpec preset name; None: the run's --spec
    attention: str | None = None     # 'fp32' | 'bf16' | 'auto'; None: the run's --attention

    @property
    def label(self) -> str:
        attention = f"attn={self.attention}" if self.attention else None
        return " ".join(x for x in (self.target, self.precision, self.spec, attention) if x)


def parse_configs(text: str) -> list[Config]:
    """'cpu:fp,customcpu:int:channel-row,customcpu:int:attn=fp32' -> Configs
    (target:precision[:spec preset][:attn=auto|fp32|bf16|fp32-native])."""
    configs = []
    for item in (s.strip() for s in text.split(",")):
        parts = item.split(":")
        if not item or len(parts) not in (2, 3, 4):
            raise BertQAError(f"--compare item {item!r}: write target:precision[:spec][:attn=MODE], "
                              "e.g. cpu:fp, customcpu:int:channel-row or customcpu:int:attn=fp32")
        target, precision, spec, attention = parts[0], parts[1], None, None
        for extra in parts[2:]:
            if extra.startswith("attn="):
                attention = extra[len("attn="):]
                if attention not in ATTENTION_MODES:
                    raise BertQAError(f"--compare item {item!r}: unknown attention {attention!r} "
                                      f"({', '.join(ATTENTION_MODES)})")
            elif spec is None:
                spec = extra
            else:
                raise BertQAError(f"--compare item {item!r}: two specs ({spec!r}, {extra!r})")
        if target not in TARGETS:
            raise BertQAError(f"--compare item {item!r}: unknown target {target!r} ({', '.join(TARGETS)})")
        if precision not in PRECISIONS:
            raise BertQAError(f"--compare item {item!r}: unknown precision {precision!r} (fp or int)")
        if spec is not None and spec not in PRESETS:
            raise BertQAError(f"--compare item {item!r}: unknown spec preset {spec!r} ({', '.join(PRESETS)})")
        if spec is not None and (target == "cpu" or precision != "int"):
            raise BertQAError(f"--compare item {item!r}: a spec applies to a custom target with precision int")
        config = Config(target, precision, spec, attention)
        if config in configs:
            raise BertQAError(f"--compare lists {item!r} twice")
        configs.append(config)
    return configs


@dataclass
class Run:
    """One configuration's answers and timings over the questions."""
    label: str
    target: str
    precision: str
    spec: str                                               # QuantSpec label, or "-"
    predictions: dict[str, str]
    na_scores: dict[str, float] = field(default_factory=dict)   # v2.0 only
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0                                    # sum of the timed answer_batch calls
    batch: int = 1
    info: dict = field(default_factory=dict)                # backend, load time, ...


def _prediction(answers, allow_no_answer: bool, null_threshold: float, v2: bool) -> tuple[str, float]:
    """(text, no-answer score) from answer_batch's list for one question."""
    if not v2:
        return answers[0].text, 0.0
    null = answers[0]                       # v2 asks for [null answer, best span]
    span = answers[1] if len(answers) > 1 else None
    if span is None:
        return "", math.inf
    na = math.log(max(null.score, 1e-300)) - math.log(max(span.score, 1e-300))
    return ("" if allow_no_answer and na > null_threshold else span.text), na


WARMUP_CALLS = 3     # untimed calls per configuration before the timed ones


class ConfigRunner:
    """One loaded configuration answering questions turn by turn into its Run."""

    def __init__(self, qa, label: str, v2: bool, batch: int = 1):
        self.qa, self.v2 = qa, v2
        self.decode = qa.options.decode
        self.options, self.top_k = (qa.options.with_decode(allow_no_answer=True,
                                                           null_threshold=-math.inf), 2) \
            if v2 else (None, 1)
        header = qa.header()
        self.run = Run(label, qa.target, qa.precision, header["quantization"], {}, batch=batch,
                       info={"model": header["model"], "backend": header["linear backend"],
                             "attention": header["attention"], "threads": header["threads"],
                             "emulated": is_emulated(qa), "notes": list(qa.notes),
                             "load_avg_1m": [load_average()]})

    def warm_up(self, questions: Sequence[SquadQuestion], calls: int = WARMUP_CALLS) -> None:
        """`calls` untimed answer_batch calls, each on the next question (shapes vary)."""
        for q in list(questions)[:calls]:
            self.qa.answer_batch([q.question], [q.context], top_k=self.top_k, options=self.options)

    def answer(self, chunk: Sequence[SquadQuestion]) -> None:
        """Answer `chunk` in one timed answer_batch call."""
        run = self.run
        t0 = time.perf_counter()
        results = self.qa.answer_batch([q.question for q in chunk], [q.context for q in chunk],
                                       top_k=self.top_k, options=self.options)
        dt = time.perf_counter() - t0
        run.seconds += dt
        run.latencies_ms += [1000.0 * dt / len(chunk)] * len(chunk)
        for q, answers in zip(chunk, results):
            text, na = _prediction(answers, self.decode.allow_no_answer, self.decode.null_threshold,
                                   self.v2)
            run.predictions[q.id] = text
            if self.v2:
                run.na_scores[q.id] = na

    def finish(self) -> Run:
        self.run.info["load_avg_1m"].append(load_average())
        return self.run


def is_emulated(qa) -> bool:
    """Whether the Linear layers of `qa` run on an emulator of their device (the AIE tiles)."""
    from bertqa.quant import custom_nodes
    return any(node.backend.emulated for node in custom_nodes(qa.prepared.model))


def run_label(config: "Config", qa) -> str:
    """The configuration's name in the report; a configuration that leaves target/precision to
    the model (no --target) is named by what loaded; an emulated device says so."""
    label = config.label if config.target and config.precision else f"{qa.target} {qa.precision}"
    return label + (" (emulator)" if is_emulated(qa) else "")


def interleave(runners: Sequence[ConfigRunner], questions: Sequence[SquadQuestion], batch: int = 1,
               progress: bool = True) -> list[Run]:
    """Warm every runner up, then let them answer `batch` questions each in turn, the order of
    the runners rotating by one every turn."""
    from tqdm import tqdm
    assert batch >= 1, f"batch must be >= 1, got {batch}"
    for runner in runners:
        runner.warm_up(questions)
    with tqdm(total=len(questions) * len(runners), desc=", ".join(r.run.label for r in runners),
              unit="q", file=sys.stderr, disable=not progress, dynamic_ncols=True) as bar:
        for turn, start in enumerate(range(0, len(questions), batch)):
            chunk = questions[start:start + batch]
            k = turn % len(runners)
            for runner in [*runners[k:], *runners[:k]]:
                runner.answer(chunk)
                bar.update(len(chunk))
    return [runner.finish() for runner in runners]


def answer_questions(qa, questions: Sequence[SquadQuestion], v2: bool, batch: int = 1,
                     progress: bool = True, desc: str = "") -> Run:
    """Answer every question with `qa` (a QAModel), `batch` questions per answer_batch call."""
    return interleave([ConfigRunner(qa, desc, v2, batch)], questions, batch, progress)[0]


def load_average() -> float | None:
    """The OS's 1-minute load average: on a shared machine, how far to trust the latencies."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def run_configs(configs: Sequence[Config], data: SquadSet, load: Callable[[Config], object],
                batch: int = 1, progress: bool = True) -> list[Run]:
    """Load every configuration (all in memory together), then answer `data` with them
    interleaved (see the module docstring)."""
    runners = []
    for config in configs:
        t0 = time.perf_counter()
        qa = load(config)
        load_s = time.perf_counter() - t0
        runner = ConfigRunner(qa, run_label(config, qa), data.version == "2.0", batch)
        runner.run.info["load_s"] = load_s
        runners.append(runner)
    runs = interleave(runners, data.questions, batch, progress)
    del runners
    gc.collect()
    return runs


def score_run(run: Run, data: SquadSet) -> dict:
    """The metric of the file's version for one run (v1.1 questions without gold left out)."""
    if data.version == "coqa":
        from bertqa.eval.coqa import score_coqa
        return score_coqa(run.predictions, data)
    if data.version == "2.0":
        return score_v2(run.predictions, data.golds, run.na_scores or None)
    golds = {qid: g for qid, g in data.golds.items() if g}
    return score_v1(run.predictions, golds)


def latency_summary(run: Run) -> dict:
    if not run.latencies_ms:
        return {"latency_ms_p50": None, "latency_ms_p90": None, "latency_ms_p99": None,
                "questions_per_s": None, "latency": "-"}
    p50, p90, p99 = np.percentile(np.asarray(run.latencies_ms), [50, 90, 99])
    mode = "per question" if run.batch == 1 else f"amortized over batches of {run.batch}"
    return {"latency_ms_p50": float(p50), "latency_ms_p90": float(p90), "latency_ms_p99": float(p99),
            "questions_per_s": len(run.latencies_ms) / run.seconds if run.seconds else None,
            "latency": mode}


def result_rows(runs: Sequence[Run], data: SquadSet) -> list[dict]:
    """One row per run: scores, delta F1 and answer agreement against the first run, latency."""
    rows, first = [], runs[0] if runs else None
    for run in runs:
        scores = score_run(run, data)
        same = [run.predictions.get(q.id) == first.predictions.get(q.id) for q in data.questions]
        row = {"label": run.label, "target": run.target, "precision": run.precision, "spec": run.spec,
               **scores,
               "delta_f1": scores["f1"] - (rows[0]["f1"] if rows else scores["f1"]),
               "same_answer_pct": 100.0 * sum(same) / len(same),
               **latency_summary(run), **run.info}
        rows.append(row)
    return rows


def predictions_run(predictions: dict[str, str], data: SquadSet) -> Run:
    """A run for an existing predictions file, restricted to the questions of `data`."""
    ids = {q.id for q in data.questions}
    return Run("predictions", "predictions", "-", "-", {k: v for k, v in predictions.items() if k in ids})
