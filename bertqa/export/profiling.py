"""`bertqa profile --target onnx`: time per operator type from ONNX Runtime's own profiler.

The exported graph runs as one session call, so the module hooks of bertqa.bench.profile see nothing
inside it; instead a second session over the same model.onnx is opened with ORT's profiling on,
the questions are answered through it, and the kernel times of its trace ("<node>_kernel_time"
events) are summed by operator type (after ORT's fusions: e.g. MatMul + Add may run as one
FusedMatMul, Div/Erf/Mul as Gelu).
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from typing import Sequence


def profile_onnx(qa, pairs: Sequence[tuple[str, str]]) -> dict:
    import onnxruntime as ort
    model = qa.pipeline.model
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = model.session.get_session_options().intra_op_num_threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bertqa-ort-{os.getpid()}")
    profiled = ort.InferenceSession(str(model.path / "model.onnx"), opts, providers=model.session.get_providers())
    plain, model.session = model.session, profiled
    try:
        qa.answer(*pairs[0])                                   # warm-up (also in the trace: dropped below)
        t0 = time.perf_counter()
        for question, context in pairs:
            qa.answer(question, context)
        total = time.perf_counter() - t0
    finally:
        model.session = plain
        trace = profiled.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.unlink(trace)
    runs = [e for e in events if e.get("name") == "model_run"]
    warm_end = runs[0]["ts"] + runs[0]["dur"] if runs else 0
    ops: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= warm_end:
            row = ops[e.get("args", {}).get("op_name", "?")]
            row[0] += e["dur"] / 1e6
            row[1] += 1
    forward = sum(e["dur"] for e in runs[1:]) / 1e6
    return {"kind": "onnx", "ops": dict(ops), "forward": forward, "forwards": len(runs) - 1,
            "total": total, "questions": len(pairs), "provider": model.describe()}


def format_onnx_profile(summary: dict) -> str:
    total = summary["total"]
    lines = [f"{summary['questions']} questions, {summary['forwards']} forward passes, "
             f"{total * 1e3:.1f} ms in all ({total * 1e3 / summary['questions']:.1f} ms per question), "
             f"{summary['provider']}",
             f"{'operator (after ONNX Runtime fusions)':48} {'ms':>10} {'share':>7} {'calls':>7}"]
    for op, (seconds, calls) in sorted(summary["ops"].items(), key=lambda kv: -kv[1][0]):
        lines.append(f"{op:48} {seconds * 1e3:10.1f} {100 * seconds / total:6.1f}% {calls:>7}")
    lines.append(f"{'model forward (session runs)':48} {summary['forward'] * 1e3:10.1f} "
                 f"{100 * summary['forward'] / total:6.1f}% {summary['forwards']:>7}")
    return "\n".join(lines)
