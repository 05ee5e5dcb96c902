"""A prepared int8 model saved to a directory, and a start from it without the fp32 checkpoint.

    DIR/bertqa-prepared.json   {"format": "bertqa-prepared", "version": 1, "model_name": ...,
                                "target": ..., "precision": "int", "spec": {QuantSpec fields},
                                "layers": {name: {in_features, out_features, shift, gelu}}}
    DIR/prepared.safetensors   every int8 node's wq, sw, bias, input_scale (quant.persist), and
                               every other tensor of the model (embeddings, LayerNorms) in fp32
    DIR/config.json, tokenizer files   copied from the model directory: DIR stands alone

`bertqa.load(model=DIR)` recognises DIR by its JSON file and builds the nodes straight from the
saved tensors (no fp32 weights, no calibration), then the backend prepares them as usual.
The JSON is written last, so an interrupted save leaves a directory that is not loaded as one.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from bertqa import paths
from bertqa.errors import BertQAError, ModelError, TargetUnavailable
from bertqa.model.loading import PREPARED_FILES, meta_model, read_config
from bertqa.model.safetensors_io import SafetensorsFile, write_safetensors
from bertqa.quant import QuantSpec, custom_nodes
from bertqa.quant.persist import SavedNodeError, node_state, nodes_from_state
from bertqa.targets import Prepared

FORMAT, VERSION = "bertqa-prepared", 1
MANIFEST, WEIGHTS = PREPARED_FILES
COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
          "vocab.json", "merges.txt")


def is_prepared_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def save_prepared(prepared: Prepared, model_dir: Path, model_name: str, out_dir: str | Path) -> Path:
    """Write `prepared` (int8, on a CPU backend) and model_dir's config and tokenizer to out_dir."""
    if prepared.precision != "int" or not custom_nodes(prepared.model):
        raise BertQAError(f"only int8 models on a custom target can be saved (this one is "
                          f"--target {prepared.target} --precision {prepared.precision}); "
                          "an fp32 model is its checkpoint")
    if prepared.device != "cpu":
        raise BertQAError(f"a model prepared for {prepared.device} holds its tensors there in another "
                          "dtype; save one prepared for --target customcpu and load it on any target")
    out = paths.out_dir(out_dir)
    try:
        return _write_prepared(prepared, model_dir, model_name, out)
    except OSError as e:
        raise BertQAError(f"cannot write the prepared model to {out}: {e.strerror or e}") from None


def _write_prepared(prepared: Prepared, model_dir: Path, model_name: str, out: Path) -> Path:
    (out / MANIFEST).unlink(missing_ok=True)
    nodes, layers = node_state(prepared.model)
    others = {k: v.detach().to(torch.float32) for k, v in prepared.model.state_dict().items()
              if k.rpartition(".")[0] not in layers}          # a node's buffers are in `nodes`
    write_safetensors(out / WEIGHTS, {**others, **nodes}, {"format": FORMAT})
    for name in COPIED:
        src, dst = Path(model_dir) / name, out / name
        if src.is_file() and not (dst.exists() and dst.samefile(src)):
            shutil.copyfile(src, dst)
    manifest = {"format": FORMAT, "version": VERSION, "model_name": model_name,
                "target": prepared.target, "precision": "int", "spec": prepared.spec.to_dict(),
                "layers": layers}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def read_manifest(path: Path) -> dict:
    """The JSON of a saved model, checked; ModelError naming the file and the key at fault."""
    file = path / MANIFEST
    try:
        m = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {file}: {e}") from e

    def bad(key: str, why: str):
        return ModelError(f"{file}: key {key!r} {why}")
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise bad("format", f"must be {FORMAT!r}")
    if m.get("version") != VERSION:
        raise bad("version", f"is {m.get('version')!r}; this bertqa reads version {VERSION} "
                  "(prepare the model again from its checkpoint)")
    if m.get("precision") != "int":
        raise bad("precision", "must be 'int'")
    if not isinstance(m.get("target"), str):
        raise bad("target", "must be a target name")
    try:
        m["spec"] = QuantSpec(**m["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise bad("spec", f"is not a valid quantization spec ({e})") from None
    layers = m.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise bad("layers", "must map each layer's name to its record")
    for name, rec in layers.items():
        fields = ("in_features", "out_features", "shift", "gelu")
        if not isinstance(rec, dict) or set(rec) != set(fields):
            raise bad(f"layers.{name}", f"must have exactly the fields {', '.join(fields)}")
        ints = [rec[f] for f in fields[:3]]
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in ints) \
                or rec["shift"] > 16 or not isinstance(rec["gelu"], bool):
            raise bad(f"layers.{name}", "needs in_features, out_features >= 0, shift 0..16, gelu true/false")
    return m


def open_saved(path: Path, target: str | None, spec: QuantSpec | None):
    """(model, nodes, target, parameters of the fp32 model, manifest) for the saved model in
    `path`: the model with every tensor but its Linear layers' (mapped, on the CPU), the
    NodeSource that puts the saved int8 nodes in place (for targets.prepare_target), and
    `target` or, by default, the one it was saved for."""
    manifest = read_manifest(path)
    if target == "cpu":
        raise TargetUnavailable(f"{path} holds a prepared int8 model: it runs on a custom target "
                                "(customcpu, aie, gpu), not on --target cpu")
    if spec is not None and spec != manifest["spec"]:
        raise BertQAError(f"{path} was prepared with spec '{manifest['spec'].label()}'; it cannot be "
                          f"re-quantized to '{spec.label()}' without the fp32 checkpoint")
    weights = SafetensorsFile(path / WEIGHTS)
    model = meta_model(read_config(path))
    n_params = sum(p.numel() for p in model.parameters())
    linears = {n for n, m in model.named_modules() if type(m) is torch.nn.Linear}
    others = [k for k in model.state_dict() if k.rpartition(".")[0] not in linears]
    missing = [k for k in others if k not in weights.entries]
    if missing:
        raise ModelError(f"{weights.path} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    # mapped, not read: every saved tensor is kept, so a read would only add a copy and time
    state = {k: weights.map(k).to(torch.float32) for k in others}
    try:
        model.load_state_dict(state, assign=True, strict=False)
    except RuntimeError as e:
        raise ModelError(f"{weights.path}: {e}") from None

    def nodes(m, precision, chosen, _spec, _calibrate, _fuse_gelu) -> None:
        """The saved nodes as they are: no quantization, no calibration."""
        assert precision == "int", "a saved model is int8"
        try:
            nodes_from_state(m, weights.map, set(weights.entries), manifest["layers"], manifest["spec"], chosen)
        except SavedNodeError as e:
            raise ModelError(f"{path}: {e}") from None
    return model.eval(), nodes, target or manifest["target"], n_params, manifest
