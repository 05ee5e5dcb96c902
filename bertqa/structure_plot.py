"""Draw a Structure (bertqa.structure) as a top-to-bottom flow chart, to PNG and SVG.

One box per step in call order: custom linear nodes (with their backend, kernel, K -> N and int8
details), host kernels (attention, residual + LayerNorm: what runs them) and PyTorch modules,
each in its own colour; frames group the steps of one module (embeddings, attention, ffn), and
the repeated layer is drawn once inside a frame that says how many there are. Shapes are written
with the traced batch and sequence sizes as B and S. Needs matplotlib (the eval extra); the
Figure is made without pyplot, so drawing touches no global state. SVG text stays text.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from bertqa.structure import Step, Structure

COLOURS = {"node": "#f4b183", "host": "#9dc3e6", "torch": "#e7e6e6"}
KIND_NAMES = {"node": "custom linear node (backend: kernel)", "host": "host kernel",
              "torch": "PyTorch module"}
WIDTH = 7.6                      # inches
LINE = 0.155                     # inches per text line in a box
GAP = 0.2                        # between boxes (an arrow)
FONT = 7.5


def shape_text(shape: tuple, batch: int, seq: int) -> str:
    """(1, 15, 1024) -> '[B, S, 1024]' for a trace with batch 1 and sequence 15."""
    dims = list(shape)
    named = []
    for i, d in enumerate(dims):
        if i == 0 and len(dims) >= 2 and d == batch and dims[1] == seq:
            named.append("B")
        elif d == seq and (i == 1 or (i == 0 and (len(dims) == 1 or dims[1] != seq))):
            named.append("S")
        else:
            named.append(str(d))
    return "[" + ", ".join(named) + "]"


def box_lines(step: Step, batch: int, seq: int) -> list[str]:
    head = f"{step.name}   {step.op}"
    lines = [head]
    if step.shape_in:
        lines.append(f"{shape_text(step.shape_in, batch, seq)} -> {shape_text(step.shape_out, batch, seq)}")
    lines += step.lines
    lines += [f"calls {s.name} ({s.op})" for s in step.inner]
    return lines


def _group(name: str, layer_name: str) -> str:
    """The frame a step belongs to: its parent module's path ('embeddings', 'layers.0.ffn')."""
    parent = name.rpartition(".")[0]
    return parent if parent and parent != layer_name + ".0" else ""


def layout(st: Structure) -> tuple[list[tuple], float]:
    """[(kind, y_top, height, payload)] top to bottom, and the total height in inches.
    kinds: 'text', 'box' (payload (step, lines, depth)), 'frame' (payload (label, depth, y_end))."""
    items, y = [], 0.25
    for line in [st.title, *sum((textwrap.wrap(f, 120) for f in st.facts), [])]:
        items.append(("text", y, LINE, line))
        y += LINE + (0.08 if line == st.title else 0.0)
    y += 0.15
    items.append(("io", y, LINE * 1.6, "in: " + st.inputs))
    y += LINE * 1.6 + GAP

    def steps_block(steps: list[Step], depth: int) -> None:
        nonlocal y
        open_group, group_start = None, None
        for step in steps:
            group = _group(step.name, st.layer_name)
            if group != open_group:
                if open_group:
                    items.append(("frame", group_start, y - group_start - GAP + 0.08, (open_group, depth + 1)))
                    y += 0.1
                open_group, group_start = group, y
                if group:
                    y += LINE + 0.05                       # the frame's label
            lines = box_lines(step, st.batch, st.seq)
            h = LINE * len(lines) + 0.1
            items.append(("box", y, h, (step, lines, depth + (2 if group else 1))))
            y += h + GAP
        if open_group:
            items.append(("frame", group_start, y - group_start - GAP + 0.08, (open_group, depth + 1)))
            y += 0.1

    steps_block(st.before, 0)
    if st.layer:
        start = y
        y += LINE + 0.1
        steps_block(st.layer, 1)
        label = (f"encoder layer, x {st.repeats}: {st.layer_name}.0 .. {st.layer_name}.{st.repeats - 1} "
                 "have this structure (layer 0 drawn)")
        items.append(("frame", start, y - start - GAP + 0.12, (label, 1)))
        y += 0.18
    steps_block(st.after, 0)
    items.append(("io", y, LINE * 1.6, "out: " + st.outputs))
    y += LINE * 1.6 + 0.25
    items.append(("legend", y, 0.3, None))
    return items, y + 0.45


def draw(st: Structure):
    """The matplotlib Figure of `st`."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
    items, height = layout(st)
    fig = Figure(figsize=(WIDTH, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, WIDTH)
    ax.set_ylim(height, 0)                                 # y grows downwards, in inches
    ax.axis("off")
    centre = WIDTH / 2
    previous_bottom = None
    for kind, top, h, payload in items:
        if kind == "text":
            bold = payload == st.title
            ax.text(0.25, top, payload, fontsize=FONT + (2 if bold else 0), va="top",
                    weight="bold" if bold else "normal")
        elif kind == "io":
            ax.text(centre, top + h / 2, payload, fontsize=FONT, ha="center", va="center", style="italic")
            if previous_bottom is not None:
                _arrow(ax, FancyArrowPatch, centre, previous_bottom, top)
            previous_bottom = top + h
        elif kind == "box":
            step, lines, depth = payload
            x0, x1 = 0.3 + 0.22 * depth, WIDTH - 0.3 - 0.22 * depth
            ax.add_patch(FancyBboxPatch((x0, top), x1 - x0, h, boxstyle="round,pad=0,rounding_size=0.06",
                                        fc=COLOURS[step.kind], ec="#404040", lw=0.6))
            ax.text(x0 + 0.1, top + 0.05, lines[0], fontsize=FONT, va="top", weight="bold", family="monospace")
            ax.text(x0 + 0.1, top + 0.05 + LINE, "\n".join(lines[1:]), fontsize=FONT, va="top",
                    linespacing=1.25)
            if previous_bottom is not None:
                _arrow(ax, FancyArrowPatch, centre, previous_bottom, top)
            previous_bottom = top + h
        elif kind == "frame":
            label, depth = payload
            x0, x1 = 0.3 + 0.22 * (depth - 1) + 0.1, WIDTH - 0.3 - 0.22 * (depth - 1) - 0.1
            ax.add_patch(Rectangle((x0, top), x1 - x0, h, fill=False, ls="--", lw=0.8,
                                   ec="#1f4e79" if depth == 1 else "#7f7f7f"))
            ax.text(x0 + 0.08, top + 0.04, label, fontsize=FONT, va="top", zorder=5,
                    weight="bold" if depth == 1 else "normal", color="#1f4e79" if depth == 1 else "#404040",
                    bbox=dict(fc="white", ec="none", pad=1.0))
        elif kind == "legend":
            x = 0.35
            for k, name in KIND_NAMES.items():
                ax.add_patch(Rectangle((x, top), 0.25, 0.16, fc=COLOURS[k], ec="#404040", lw=0.6))
                ax.text(x + 0.32, top + 0.08, name, fontsize=FONT, va="center")
                x += 0.45 + 0.062 * len(name)
    return fig


def _arrow(ax, arrow_cls, x: float, y0: float, y1: float) -> None:
    ax.add_patch(arrow_cls((x, y0), (x, y1), arrowstyle="-|>", mutation_scale=8, lw=0.7, color="#404040"))


def save_structure(st: Structure, base: str | Path) -> list[Path]:
    """Write base.png and base.svg (a suffix on base is dropped); returns both paths."""
    import matplotlib
    base = Path(base)
    base = base.with_suffix("") if base.suffix.lower() in (".png", ".svg") else base
    fig = draw(st)
    paths = [base.with_suffix(".png"), base.with_suffix(".svg")]
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "bertqa"}):
        fig.savefig(paths[0], dpi=90)
        fig.savefig(paths[1], metadata={"Date": None})
    return paths
