"""`bertqa bench --memory`: peak resident memory and start time of preparing BERT-large int8.

Writes a random BERT-large (its exact shapes, Hugging Face tensor names, fp32: 1.3 GB) with a
config.json and the bundled tokenizer to a temporary directory, then runs each configuration in
a fresh Python process and reads that process's peak resident set (VmHWM, see peak_rss_mb):

  baseline        python, import torch and bertqa: what every row pays before any weight
  torch-int8      PyTorch's path: the whole fp32 model, then torch.ao quantize_dynamic
                  (bertqa.load --target cpu --precision int)
  bertqa-whole    (optional) the whole fp32 model, then bertqa's quantize_model (customcpu int)
  first-start     bertqa.load --target customcpu --precision int: streamed from the
                  checkpoint one layer at a time, default spec, calibrated on the built-in
                  stories (all windows in one forward); then QAModel.save
  second-start    bertqa.load of the saved directory: no fp32 weights, no calibration

'ready' is the wall time from the process's launch (interpreter and imports included) until
bertqa.load returned; 'peak' is the high-water mark until then (for first-start: through the
save). Results are checked first: first-start and second-start must give bit-identical logits
on the same input (that forward runs after the peak is read). Ratios are against rows measured
in the same run: memory against torch-int8, time against first-start.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD_ROWS = ("baseline", "torch-int8", "bertqa-whole", "first-start", "second-start")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def peak_rss_mb() -> float:
    """This process's peak resident set, MiB: VmHWM, the high-water mark of its own address
    space. (ru_maxrss is not used: Linux carries it over from the parent across fork and exec,
    so a child launched by a large parent reports at least the parent's size.)"""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0                       # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0      # Linux: KiB


def write_checkpoint(out: Path, layers: int | None = None) -> int:
    """A random BERT-large as a Hugging Face model directory; returns the weight file's bytes."""
    from dataclasses import asdict

    from bertqa.model.bert import BertConfig, random_model
    from bertqa.model.loading import BUNDLED_DIR, hf_state_dict
    from bertqa.model.safetensors_io import write_safetensors
    config = BertConfig.bert_large()
    if layers:
        config.num_hidden_layers = layers
    model = random_model(config, seed=0)
    write_safetensors(out / "model.safetensors", hf_state_dict(model), {"format": "pt"})
    del model
    (out / "config.json").write_text(json.dumps({**asdict(config), "model_type": "bert"}))
    for name in TOKENIZER_FILES:
        if (BUNDLED_DIR / name).is_file():
            shutil.copy(BUNDLED_DIR / name, out / name)
    return (out / "model.safetensors").stat().st_size


def check_logits(qa) -> str:
    """A fingerprint of the start logits on a fixed input (bit-exact comparison across rows)."""
    import hashlib

    import torch
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1000, 30000, (1, 128), generator=g)
    with torch.inference_mode():
        start, _ = qa.prepared.model(ids, torch.zeros_like(ids), torch.ones_like(ids))
    return hashlib.sha256(start.float().contiguous().numpy().tobytes()).hexdigest()[:16]


def child(row: str, ckpt: str, saved: str, launched: float, layers: int) -> dict:
    """One row, in this (fresh) process."""
    import torch  # noqa: F401  (the baseline pays the same imports as every other row)

    import bertqa
    result = {"row": row}
    if row == "write":
        return {"bytes": write_checkpoint(Path(ckpt), layers)}
    if row == "baseline":
        qa = None
    elif row == "torch-int8":
        qa = bertqa.load(model=ckpt, target="cpu", precision="int")
    elif row == "bertqa-whole":
        from bertqa.api import from_module
        from bertqa.model.loading import load_model
        qa = from_module(load_model(Path(ckpt)), Path(ckpt), "random", "customcpu", "int")
    elif row == "first-start":
        qa = bertqa.load(model=ckpt, target="customcpu", precision="int")
    else:
        qa = bertqa.load(model=saved)
    result["ready_s"] = time.time() - launched
    if row == "first-start":
        t0 = time.perf_counter()
        qa.save(saved)
        result["save_s"] = time.perf_counter() - t0
    result["peak_mb"] = peak_rss_mb()
    if qa is not None:
        result["backend"] = qa.prepared.backend
        result["logits"] = check_logits(qa)
        result["peak_with_forward_mb"] = peak_rss_mb()
    return result


def run_child(row: str, ckpt: Path, saved: Path, layers: int | None = None) -> dict:
    """child(row, ...) in a new process ('write': the checkpoint, so that this one stays small)."""
    launched = time.time()
    cmd = [sys.executable, "-m", "bertqa.bench.memory_bench", "--child", row, str(ckpt), str(saved),
           repr(launched), str(layers or 0)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"memory bench row {row} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_memory_bench(rows=("baseline", "torch-int8", "first-start", "second-start"),
                     layers: int | None = None, workdir: str | None = None, echo=print) -> list[dict]:
    """Measure `rows` (see the module docstring), print the table with `echo`, return the rows."""
    unknown = set(rows) - set(CHILD_ROWS)
    assert not unknown, f"unknown rows {sorted(unknown)}; choose from {CHILD_ROWS}"
    assert "second-start" not in rows or "first-start" in rows, "second-start loads what first-start saved"
    with tempfile.TemporaryDirectory(prefix="bertqa-membench-", dir=workdir) as tmp:
        ckpt, saved = Path(tmp) / "checkpoint", Path(tmp) / "prepared"
        ckpt.mkdir()
        t0 = time.perf_counter()
        size = run_child("write", ckpt, saved, layers=layers)["bytes"]
        echo(f"checkpoint: random BERT-large shapes ({layers or 24} layers), fp32, "
             f"{size / 2**20:.0f} MiB, written in {time.perf_counter() - t0:.1f} s")
        results = []
        for row in rows:
            results.append(run_child(row, ckpt, saved))
            echo(f"  measured {row}")
        saved_mb = sum(p.stat().st_size for p in saved.iterdir()) / 2**20 if saved.exists() else 0.0
    by = {r["row"]: r for r in results}
    if "second-start" in by:
        assert by["first-start"]["logits"] == by["second-start"]["logits"], \
            "the saved model's logits differ from those of the model it was saved from"
    echo(format_memory_table(results, saved_mb))
    return results


def format_memory_table(results: list[dict], saved_mb: float) -> str:
    by = {r["row"]: r for r in results}
    torch_peak = by.get("torch-int8", {}).get("peak_mb")
    first_ready = by.get("first-start", {}).get("ready_s")
    lines = [f"{'row':14} {'peak MiB':>9} {'vs torch':>8} {'ready s':>8} {'vs first':>8} "
             f"{'save s':>7} {'+fwd MiB':>9}  backend"]
    for r in results:
        peak, ready = r["peak_mb"], r.get("ready_s")
        lines.append(
            f"{r['row']:14} {peak:9.0f} {peak / torch_peak if torch_peak else float('nan'):8.2f} "
            f"{ready:8.2f} {ready / first_ready if first_ready else float('nan'):8.2f} "
            f"{r['save_s'] if 'save_s' in r else float('nan'):7.2f} "
            f"{r.get('peak_with_forward_mb', float('nan')):9.0f}  {r.get('backend', '-')}")
    if saved_mb:
        lines.append(f"saved directory: {saved_mb:.0f} MiB; logits of first and second start identical")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:5], float(sys.argv[5]), int(sys.argv[6]))))
    else:
        run_memory_bench(rows=tuple(sys.argv[1].split(",")) if len(sys.argv) > 1 else
                         ("baseline", "torch-int8", "first-start", "second-start"))
