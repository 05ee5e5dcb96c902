"""`bertqa bench`: whole-model speed of the engines a user could pick, interleaved in one run.

BERT in its exact shapes (BERT-large by default) with random weights (no download): batch 1 at
each sequence length, a throughput case (batch 8 x seq 128), and a mixed-length case: the
windows of 32 questions in padded batches of 8 (bertqa.bench.mixed). The engines are those of
bertqa.bench.peers: torch fp32 and dynamic int8, customcpu fp / int / int with PyTorch's host
kernels (`-sdpa`) / int with packed batches off (`-padded`, the mixed case only), ONNX Runtime
int8 (quantize_dynamic) on the plain and on the transformers-optimized graph, OpenVINO at its
default precision and int8 (NNCF), torchao/pt2e int8. Each runs in its own worker process
(bertqa.bench.worker), built one after the other (an export of BERT-large peaks at several GB),
all from the same random model and fed the same inputs.

Results are checked first: each engine's logits on each case against torch fp32's (always built,
as the reference), max |difference| relative to the reference's largest |logit| within the
engine's tolerance (FP_TOL for the floating-point engines, INT8_TOL for int8 ones); an engine off
beyond it is reported as such and not timed. Then interleaved rounds: in each round every case,
and in each case one forward of every engine, the order rotated by one engine per round, so that
a noisy neighbour or a position in the round slows all of them alike. Every ratio is between
figures of the same run: customcpu int's time over each engine's, median to median and fastest to
fastest (the steadier figure on a shared machine: each engine on its quietest round).

Each timed forward starts on a settled machine: `settle_s` (0.1 s) of sleep, untimed, comes before
it. ONNX Runtime's intra-op pool keeps one core spinning for ~50 ms after every run (50 ms of
process CPU in the 100 ms after session.run returned), so without the pause whichever engine
follows it in the round would share its first ~50 ms with a busy core.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bertqa.bench.mixed import Mixed, real_logits
from bertqa.model.bert import BertConfig, random_model

# the PyTorch-side engines, built by build_torch (the others: bertqa.bench.peers)
CONFIGS = ("torch-fp32", "torch-int8", "customcpu-fp", "customcpu-int", "customcpu-int-sdpa",
           "customcpu-int-padded")
REFERENCE = "torch-fp32"
OURS = "customcpu-int"
PADDED = "customcpu-int-padded"     # OURS with packed batches off: the mixed case's other half
MIXED = "mixed"                     # the seq of the mixed-length case: (MIXED, batch)
FP_TOL = 2e-2           # max |dlogit| / max |reference logit|: fp32 kernels, or bf16 where OpenVINO picks it
INT8_TOL = 0.3          # int8 weights and activations through 24 layers of random weights
SETTLE_S = 0.1
DEFAULT_CASES = ((384, 1), (128, 1), (128, 8))     # (seq, batch)
INSTALL_HINT = "pip install 'bertqa[bench]'"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bertqa" / "bench"


@dataclass
class Timing:
    name: str
    seq: int
    batch: int = 1
    times_ms: list = field(default_factory=list)
    note: str = ""
    logit_err: float = float("nan")     # max |logits - torch fp32's| on the case's input
    rel_err: float = float("nan")       # logit_err / max |torch fp32 logit|
    argmax_agree: float = float("nan")  # fraction of (row, start/end) whose argmax agrees
    status: str = "ok"                  # 'ok', or why it was not timed

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    @property
    def fastest(self) -> float:
        return min(self.times_ms) if self.times_ms else float("nan")


@dataclass
class BenchRun:
    timings: list                       # [Timing], case by case
    labels: dict                        # engine -> what it is
    skipped: dict                       # engine -> why it did not run
    rounds: int
    threads: int
    settle_s: float
    mixed: Mixed | None = None          # the mixed-length case, if it ran
    packed_same: bool | None = None     # OURS's and PADDED's logits there identical at real tokens


def random_inputs(vocab: int, seq: int, batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g)
    types = torch.zeros_like(ids)
    types[:, seq // 4:] = 1
    return ids, types, torch.ones_like(ids)


def build_torch(config: BertConfig, name: str, spec=None, seed: int = 0, calib=None, model=None):
    """A callable (ids, types, mask) -> (start, end) for one of the PyTorch-side configurations."""
    from bertqa.quant import QuantSpec
    from bertqa.targets import TARGET_TABLE, prepare_target, target_of_backend
    model = model if model is not None else random_model(config, seed)
    if name == "torch-fp32":
        return model, "PyTorch fp32"
    if name == "torch-int8":
        p = prepare_target(model, "cpu", "int")
        return p.model, p.backend
    # '<backend>-<precision>[-sdpa|-padded]', for any registered backend, on the target that lists it
    base, padded = (name[:-len("-padded")], True) if name.endswith("-padded") else (name, False)
    base, sdpa = (base[:-len("-sdpa")], True) if base.endswith("-sdpa") else (base, False)
    backend, _, precision = base.rpartition("-")
    target = target_of_backend(backend)
    calib = calib or [random_inputs(config.vocab_size, 128, seed=s) for s in (11, 12)]

    def calibrate(m):
        for inputs in calib:
            m(*inputs)
    p = prepare_target(model, target, precision, spec or QuantSpec.default(), calibrate,
                       backend=None if TARGET_TABLE[target].backends[0] == backend else backend,
                       attention_mode="fp32" if sdpa else None)
    label = p.backend + (f" [{p.spec.label()}]" if p.spec else "") + f"; attention {p.attention}"
    if padded:
        p.model.pack_batches = False
        label += "; packed batches off: a padded batch runs padded (bertqa.model.packing)"
    return p.model, label


def story_windows(model_dir: Path, seq: int, limit: int) -> list:
    """Batch-1 windows (ids, types, mask) of every built-in story and question, at most seq
    tokens each, the first `limit` of them: calibration inputs for a real model."""
    from bertqa.data.readers import builtin_stories
    from bertqa.qa.windows import Tokenizer, WindowOptions, collate, make_windows
    tok = Tokenizer(Path(model_dir))
    pairs = [(q, s.context) for s in builtin_stories() for q in s.questions]
    opts = WindowOptions(max_seq_len=seq, doc_stride=seq // 4, max_question_len=min(64, seq // 4))
    windows = make_windows(tok, [q for q, _ in pairs], [c for _, c in pairs], opts)
    return [collate([w], tok.pad_id) for w in windows[:limit]]


def check_logits(name: str, t: Timing, got, ref, fp: bool, real: torch.Tensor | None = None) -> None:
    """Fill t's error fields from got = (start, end) against ref; t.status says if it is off.
    real: [B, S] bool, where to compare (default everywhere); the argmax is over whole rows."""
    real = torch.ones_like(ref[0], dtype=torch.bool) if real is None else real
    # a NaN anywhere reads as an infinite difference (Python's max would skip it)
    diff = float(torch.stack([(g - r)[real].abs().max() for g, r in zip(got, ref)]).max()
                 .nan_to_num(float("inf")))
    scale = max(float(r[real].abs().max()) for r in ref)
    agree = [bool(a) for g, r in zip(got, ref) for a in (g.argmax(-1) == r.argmax(-1))]
    t.logit_err, t.rel_err, t.argmax_agree = diff, diff / scale, sum(agree) / len(agree)
    tol = FP_TOL if fp else INT8_TOL
    if not t.rel_err <= tol:                                # (NaN is off too)
        t.status = f"logits off: max|dlogit| {diff:.3g} = {t.rel_err:.3g} of max|logit| > {tol:g}"


def run_model_bench(config: BertConfig | None = None, cases=DEFAULT_CASES, rounds: int = 3,
                    engines=None, threads: int | None = None, cache_dir: Path | None = None,
                    calib: int = 300, calib_seq: int = 128, seed: int = 0, log=print,
                    settle_s: float = SETTLE_S, model_dir: Path | None = None,
                    mixed: Mixed | None = None) -> BenchRun:
    """Build every engine in its worker, check its logits, time interleaved rounds (see the
    module docstring). engines: names of bertqa.bench.peers.ENGINES (default: all).
    model_dir: real weights (config read from there), calibrated on the built-in stories'
    windows (as many as there are, up to `calib`), instead of random weights and windows.
    mixed: the mixed-length case (bertqa.bench.mixed.mixed_case) after `cases`, or none."""
    from bertqa.bench.peers import ENGINES, Build, engine, missing, runtime_registrations
    from bertqa.bench.worker import EngineProcess
    if model_dir is not None:
        from bertqa.model.loading import read_config
        config = read_config(Path(model_dir))
    config = config or BertConfig.bert_large()
    engines = list(engines or ENGINES)
    unknown = [e for e in engines if engine(e) is None]
    if unknown:
        raise ValueError(f"unknown engine {', '.join(unknown)}; choose from {', '.join(ENGINES)} "
                         "or BACKEND-fp / BACKEND-int for a registered Linear backend")
    threads = threads or torch.get_num_threads()
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    windows = (story_windows(model_dir, calib_seq, calib) if model_dir is not None else
               [random_inputs(config.vocab_size, calib_seq, seed=10_000 + i) for i in range(calib)])
    build = Build(config, seed, threads, cache_dir, windows,
                  model_dir=str(Path(model_dir).resolve()) if model_dir is not None else None,
                  registered=runtime_registrations())
    skipped = {}
    for e in engines:
        if missing(engine(e)):
            skipped[e] = f"not installed: {', '.join(missing(engine(e)))} ({INSTALL_HINT})"
        elif engine(e).mixed_only and mixed is None:
            skipped[e] = "times the mixed-length case only, which this run leaves out"
    inputs = {(seq, batch): random_inputs(config.vocab_size, seq, batch, seed=seq * 100 + batch)
              for seq, batch in cases}
    if mixed is not None:
        inputs[MIXED, mixed.batch] = mixed.batches
    cases = list(inputs)

    def logits(reply, case):
        """(start, end) of an 'inputs' reply; the mixed case's at its real tokens."""
        return real_logits(*reply[1:], mixed) if case[0] == MIXED else reply[1:]
    wanted = [e for e in engines if e not in skipped]
    names = ([REFERENCE] if REFERENCE not in wanted else []) + wanted
    procs = {e: EngineProcess(e, threads) for e in names}      # start together: imports overlap
    labels, mixed_logits = {}, {}
    try:
        for e in names:                                         # build one at a time: memory
            reply = procs[e].request("build", e, build, log=log)
            if reply[0] != "ready":
                skipped[e] = f"failed to build: {reply[1]}"
                procs.pop(e).close()
                continue
            labels[e] = reply[1]
            log(f"  prepared {e} in {reply[2]:.1f} s: {reply[1]}")
        if REFERENCE not in labels:
            raise RuntimeError(f"the reference {REFERENCE} did not build: {skipped.get(REFERENCE)}")
        timed = [e for e in wanted if e in labels]
        timings = {}
        real = mixed.real() if mixed is not None else None     # where the mixed case is compared
        for case in cases:
            seq, batch = case
            ref = logits(procs[REFERENCE].request("inputs", case, inputs[case]), case)
            for e in timed:
                if engine(e).mixed_only and seq != MIXED:
                    continue
                t = timings[e, seq, batch] = Timing(e, seq, batch, note=labels[e])
                reply = procs[e].request("inputs", case, inputs[case])
                if reply[0] != "logits":
                    t.status = f"failed to run: {reply[1]}"
                    continue
                got = logits(reply, case)
                check_logits(e, t, got, ref, engine(e).fp, real if seq == MIXED else None)
                if seq == MIXED:
                    mixed_logits[e] = got
                if t.status == "ok":                            # a second warm-up, untimed
                    procs[e].request("time", case, 0.0)
        if REFERENCE not in wanted:
            procs.pop(REFERENCE).close()
        for r in range(rounds):
            for seq, batch in cases:
                order = timed[r % len(timed):] + timed[:r % len(timed)] if timed else []
                for e in order:
                    t = timings.get((e, seq, batch))
                    if t is None or t.status != "ok":
                        continue
                    reply = procs[e].request("time", (seq, batch), settle_s)
                    if reply[0] == "ms":
                        t.times_ms.append(reply[1])
                    else:
                        t.status = f"failed to run: {reply[1]}"
    finally:
        for p in procs.values():
            p.close()
    same = None
    if OURS in mixed_logits and PADDED in mixed_logits:
        same = all(torch.equal(a, b) for a, b in zip(mixed_logits[OURS], mixed_logits[PADDED]))
    return BenchRun(list(timings.values()), labels, skipped, rounds, threads, settle_s, mixed, same)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if a == a and b == b and b > 0 else "-"


def packing_line(run: BenchRun) -> str | None:
    """OURS (packed batches) against PADDED on the mixed case, in sequences/s, or None."""
    by = {t.name: t for t in run.timings if t.seq == MIXED and t.status == "ok" and t.times_ms}
    if OURS not in by or PADDED not in by:
        return None
    n, packed, padded = run.mixed.windows, by[OURS], by[PADDED]
    same = {True: "identical", False: "NOT identical", None: "not compared"}[run.packed_same]
    return (f"  packed against padded: {OURS} {n / packed.median * 1e3:.2f} sequences/s, {PADDED} "
            f"{n / padded.median * 1e3:.2f}: x{padded.median / packed.median:.2f} the throughput "
            f"(fastest to fastest x{padded.fastest / packed.fastest:.2f}); their int8 logits at "
            f"every real token {same}")


def format_model_table(run: BenchRun, config_label: str) -> str:
    """Per case: each engine's median/min/max ms, x torch fp32, customcpu int's time over the
    engine's (median to median, min to min), its logit check; then a summary table."""
    cases = list(dict.fromkeys((t.seq, t.batch) for t in run.timings))

    def sequences(seq, batch) -> int:                  # sequences per timed forward (or forwards)
        return run.mixed.windows if seq == MIXED else batch
    lines = [f"BERT QA forward, {config_label}, {run.threads} threads, {run.rounds} interleaved "
             f"rounds, {run.settle_s:g} s pause before each forward; each engine in its own process",
             f"int/this: {OURS}'s time over the engine's in the same run (below 1: {OURS} is "
             f"faster), median to median and min to min; logits checked against {REFERENCE} "
             f"first (rel: max|dlogit| over max|logit|; tolerance {FP_TOL:g} fp, {INT8_TOL:g} int8)"]
    for seq, batch in cases:
        rows = [t for t in run.timings if (t.seq, t.batch) == (seq, batch)]
        by = {t.name: t for t in rows}
        fp32, ours = by.get(REFERENCE), by.get(OURS)
        lines.append(f"\nmixed-length windows, batches of {batch}: {run.mixed.describe()}"
                     if seq == MIXED else f"\nseq {seq}, batch {batch}")
        lines.append(f"  {'engine':21} {'median ms':>10} {'min':>9} {'max':>9} {'seq/s':>7} "
                     f"{'x fp32':>7} {'int/this':>8} {'(of mins)':>9} {'max|dlogit|':>11} "
                     f"{'rel':>7} {'argmax':>6}")
        for t in rows:
            check = f"{t.logit_err:11.3g} {t.rel_err:7.3f} {t.argmax_agree:6.0%}"
            if t.status != "ok" or not t.times_ms:
                lines.append(f"  {t.name:21} {t.status or 'not timed'}"
                             + (f"  (check: {check.strip()})" if t.logit_err == t.logit_err else ""))
                continue
            lines.append(f"  {t.name:21} {t.median:10.1f} {t.fastest:9.1f} {max(t.times_ms):9.1f} "
                         f"{sequences(seq, batch) / t.median * 1e3:7.2f} "
                         f"{_ratio(t.median, fp32.median) if fp32 else '-':>7} "
                         f"{_ratio(ours.median, t.median) if ours else '-':>8} "
                         f"{_ratio(ours.fastest, t.fastest) if ours else '-':>9} {check}")
        if seq == MIXED and (line := packing_line(run)):
            lines.append(line)
    lines.append("\nsummary (median ms; batch > 1: sequences/s; int/this as above, median to median)")
    head = " | ".join(f"mixed, batches of {b}, seq/s" if s == MIXED else f"seq {s} ms" if b == 1
                      else f"batch {b} x seq {s}, seq/s" for s, b in cases)
    lines.append(f"| engine | {head} | int/this |")
    lines.append("|---|" + "---:|" * len(cases) + "---|")
    for e in dict.fromkeys(t.name for t in run.timings):
        cells, ratios = [], []
        for seq, batch in cases:
            t = next((t for t in run.timings if (t.name, t.seq, t.batch) == (e, seq, batch)), None)
            ours = next((o for o in run.timings if (o.name, o.seq, o.batch) == (OURS, seq, batch)), None)
            ok = t is not None and t.status == "ok" and t.times_ms
            cells.append(("-" if not ok else f"{t.median:.0f}" if batch == 1 and seq != MIXED
                          else f"{sequences(seq, batch) / t.median * 1e3:.1f}"))
            ratios.append(_ratio(ours.median, t.median) if ok and ours and ours.times_ms else "-")
        lines.append(f"| {e} | " + " | ".join(cells) + f" | {' / '.join(ratios)} |")
    lines.append("\nengines:")
    for e, label in run.labels.items():
        lines.append(f"  {e}: {label}" + ("  (reference only)" if e not in
                                              {t.name for t in run.timings} else ""))
    for e, why in run.skipped.items():
        lines.append(f"  {e}: {why}")
    return "\n".join(lines)
