"""The eval report: one table of result rows as text, Markdown, JSON, and an F1-vs-latency plot.

Rows come from `compare.result_rows`; `meta` says what was measured where (data file, question
count, model, machine, how latency was timed), and every output repeats it, so a file read on
its own still names the machine its numbers came from.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
from pathlib import Path

from bertqa.errors import BertQAError

# (key, header, format) of the main table; the text and Markdown tables share them
COLUMNS = [("em", "EM", "{:.2f}"), ("f1", "F1", "{:.2f}"), ("delta_f1", "dF1", "{:+.2f}"),
           ("same_answer_pct", "same answer %", "{:.1f}"), ("latency_ms_p50", "p50 ms", "{:.1f}"),
           ("latency_ms_p90", "p90 ms", "{:.1f}"), ("latency_ms_p99", "p99 ms", "{:.1f}"),
           ("questions_per_s", "q/s", "{:.2f}")]
V2_COLUMNS = [("has_ans_em", "HasAns EM", "{:.2f}"), ("has_ans_f1", "HasAns F1", "{:.2f}"),
              ("no_ans_em", "NoAns EM", "{:.2f}"), ("best_em", "best EM", "{:.2f}"),
              ("best_em_threshold", "at t", "{:.2f}"), ("best_f1", "best F1", "{:.2f}"),
              ("best_f1_threshold", "at t", "{:.2f}")]


COQA_COLUMNS = [("span_f1", "span F1", "{:.2f}"), ("yes/no_f1", "yes/no F1", "{:.2f}"),
                ("unknown_f1", "unknown F1", "{:.2f}")]


def dataset_name(meta: dict) -> str:
    """'SQuAD v1.1', 'SQuAD v2.0' or 'CoQA' (with its turn kinds, when the rows carry them)."""
    version = meta["squad_version"]
    return "CoQA" if version == "coqa" else f"SQuAD v{version}"


def machine_description() -> str:
    """CPU model and core count from the OS, e.g. 'AMD EPYC 9R14, 2 cores'."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def make_meta(data, model: str, machine: str | None, threads: int | None, latency: str) -> dict:
    import torch
    return {"data": Path(data.path).name, "squad_version": data.version, "questions": len(data.questions),
            "no_gold_answer": list(data.no_gold), "model": model,
            "machine": machine or machine_description(), "threads": threads, "latency": latency,
            "torch": torch.__version__, "date": datetime.date.today().isoformat()}


def _threads(meta: dict) -> str:
    return f", {meta['threads']} threads" if meta.get("threads") else ""


def _kinds(rows: list[dict]) -> str:
    """For CoQA: how many turns of each kind, e.g. ': 9 span, 3 yes/no, 0 unknown turns'."""
    if not rows or "span_n" not in rows[0]:
        return ""
    r = rows[0]
    return f": {r['span_n']} span, {r['yes/no_n']} yes/no, {r['unknown_n']} unknown turns"


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-" if value is None else ("-inf" if value < 0 else "inf")
    return fmt.format(value)


def _columns(rows: list[dict]) -> list[tuple]:
    if rows and "span_f1" in rows[0]:
        return COLUMNS + COQA_COLUMNS
    return COLUMNS + (V2_COLUMNS if rows and "has_ans_f1" in rows[0] else [])


def format_table(rows: list[dict], meta: dict) -> str:
    """Fixed-width text for the terminal."""
    cols = _columns(rows)
    width = max([len("configuration")] + [len(r["label"]) for r in rows])
    cells = [[_cell(r.get(k), f) for k, _, f in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(cols)]
    lines = [f"{meta['questions']} questions of {meta['data']} ({dataset_name(meta)}{_kinds(rows)}), "
             f"model {meta['model']}, {meta['machine']}{_threads(meta)}; latency {meta['latency']}",
             "  ".join(["configuration".ljust(width)] + [h.rjust(w) for (_, h, _), w in zip(cols, widths)])]
    for r, c in zip(rows, cells):
        lines.append("  ".join([r["label"].ljust(width)] + [x.rjust(w) for x, w in zip(c, widths)]))
    lines += [f"  {r['label']}: {_describe(r)}" for r in rows]
    return "\n".join(lines)


def _describe(row: dict) -> str:
    parts = [row.get("backend") or row["target"]]
    if row.get("spec", "-") != "-":
        parts.append(row["spec"])
    if row.get("attention"):
        parts.append(f"attention {row['attention']}")
    if row.get("load_s") is not None:
        parts.append(f"loaded in {row['load_s']:.1f} s")
    if None not in row.get("load_avg_1m", [None]):
        parts.append("load average {:.1f} at start, {:.1f} at end".format(*row["load_avg_1m"]))
    if row.get("missing"):
        parts.append(f"{row['missing']} questions without a prediction (scored 0)")
    return "; ".join(parts)


def format_markdown(rows: list[dict], meta: dict) -> str:
    cols = _columns(rows)
    head = ["configuration"] + [h for _, h, _ in cols] + ["Linear backend, quantization"]
    lines = [f"# {dataset_name(meta).split()[0]} eval: {meta['data']}", "",
             f"- {meta['questions']} questions ({dataset_name(meta)}{_kinds(rows)}), model `{meta['model']}`",
             f"- machine: {meta['machine']}{_threads(meta)}, torch {meta['torch']}, {meta['date']}",
             f"- latency: {meta['latency']} (tokenize + forward + decode, wall clock)",
             "- dF1: F1 minus the first row's; same answer %: questions whose answer text is "
             "identical to the first row's"]
    if meta["no_gold_answer"]:
        lines.append(f"- {len(meta['no_gold_answer'])} questions have no gold answer and are not "
                     f"scored: {', '.join(meta['no_gold_answer'][:10])}")
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"]] + [_cell(r.get(k), f) for k, _, f in cols] + [_describe(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(value):
    """JSON has no infinity: non-finite floats (the -inf 'answer nothing' threshold) become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | Path, rows: list[dict], meta: dict) -> None:
    doc = {"results": _json_safe(rows), "meta": _json_safe(meta)}
    Path(path).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_markdown(path: str | Path, rows: list[dict], meta: dict) -> None:
    Path(path).write_text(format_markdown(rows, meta), encoding="utf-8")


def require_matplotlib(path: str | Path | None = None) -> None:
    """Fail before a long run, not after it, when the plot cannot be drawn: matplotlib missing,
    or `path`'s suffix a format it does not write."""
    try:
        import matplotlib
    except ImportError:
        raise BertQAError("the plot needs matplotlib: pip install 'bertqa[eval]'") from None
    if path is not None:
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
        formats = Figure().canvas.get_supported_filetypes()
        suffix = Path(path).suffix.lower().lstrip(".")
        if suffix not in formats:
            raise BertQAError(f"cannot plot to {path}: name a file ending in one of "
                              f"{', '.join('.' + f for f in sorted(formats))}")


def write_plot(path: str | Path, rows: list[dict], meta: dict) -> bool:
    """F1 against median latency, one labelled point per configuration; False when no row has
    a latency (scored prediction files)."""
    points = [r for r in rows if r.get("latency_ms_p50")]
    if not points:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    xs, ys = [r["latency_ms_p50"] for r in points], [r["f1"] for r in points]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    ref = rows[0]["f1"]
    ax.axhspan(ref - 1.0, ref, color="tab:green", alpha=0.08, label=f"within 1 F1 of {rows[0]['label']}")
    ax.axhline(ref, color="tab:green", lw=0.8, ls="--")
    for i, (r, x, y) in enumerate(zip(points, xs, ys)):
        marker = "s" if r["precision"] == "int" else "o"
        ax.scatter([x], [y], s=70, marker=marker, color=f"C{i}", zorder=3, edgecolor="black", lw=0.5)
    if max(xs) / min(xs) > 8:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlim(min(xs) / 1.8, max(xs) * 3.0)
    else:
        ax.set_xlim(0, max(xs) * 1.45)
    lo, hi = min(min(ys), ref - 1.0), max(ys)
    ax.set_ylim(lo - 0.5 * (hi - lo + 0.5), hi + 0.5 * (hi - lo + 0.5))
    mode = "" if meta["latency"] == "per question" else f" ({meta['latency']})"
    ax.set_xlabel(f"median latency per question, ms{mode}")
    ax.set_ylabel("F1 (%)")
    ax.set_title(f"{dataset_name(meta)} F1 vs latency: {meta['model']}, "
                 f"{meta['questions']} questions of {meta['data']}\n{meta['machine']}{_threads(meta)} "
                 "(squares: int8, circles: fp32)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    labels = [f"{r['label']}\nF1 {y:.2f}, p50 {x:.0f} ms" for r, x, y in zip(points, xs, ys)]
    _place_labels(fig, ax, labels, list(zip(xs, ys)))
    fig.savefig(path)
    plt.close(fig)
    return True


# label offsets in points, tried in order: right above, right below, left above, left below, further out
_OFFSETS = [(9, 5, "left", "bottom"), (9, -5, "left", "top"), (-9, 5, "right", "bottom"),
            (-9, -5, "right", "top"), (9, 22, "left", "bottom"), (9, -22, "left", "top"),
            (-9, 22, "right", "bottom"), (-9, -22, "right", "top")]


def _place_labels(fig, ax, labels: list[str], xy: list[tuple[float, float]]) -> None:
    """Annotate each point at the first offset whose text box stays inside the axes and clear of
    the other points and the labels already placed."""
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    marks = [ax.transData.transform(p) for p in xy]
    taken = []
    for text, point in zip(labels, xy):
        for dx, dy, ha, va in _OFFSETS:
            ann = ax.annotate(text, point, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                              fontsize=9)
            box = ann.get_window_extent(renderer).expanded(1.05, 1.1)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            clear = not any(box.overlaps(t) for t in taken) and \
                not any(box.contains(mx, my) for mx, my in marks)
            if inside and clear:
                break
            ann.remove()
        else:                                  # no free place: the first one, overlap and all
            ann = ax.annotate(text, point, xytext=_OFFSETS[0][:2], textcoords="offset points",
                              fontsize=9)
            box = ann.get_window_extent(renderer)
        taken.append(box)
