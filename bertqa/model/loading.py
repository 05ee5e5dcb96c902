"""Find a model (local directory, bundled, or Hugging Face hub id) and load its weights.

Weights map by name from a `*ForQuestionAnswering` checkpoint of a supported family (BERT,
DistilBERT, RoBERTa, XLM-RoBERTa, ELECTRA: bertqa.model.families) onto bertqa's BertForQA. The
model is built on the `meta` device and each tensor is read from the memory-mapped checkpoint,
converted to fp32 and assigned in place, so two fp32 copies of the weights never coexist.
`lazy_model` goes further for targets that quantize: only the tensors that are not Linear
weights are read; each Linear's weights are read (plain file reads, not a mapping) when the
quantization asks for them, so that one layer's fp32 weights at a time need be in memory.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from bertqa.errors import ModelError, ModelUnavailable
from bertqa.export.layout import MANIFEST as EXPORT_MANIFEST, MODEL_FILE as EXPORT_MODEL
from bertqa.model.bert import BertConfig, BertForQA
from bertqa.model.families import Family, family_for
from bertqa.model.safetensors_io import SafetensorsFile

DEFAULT_MODEL = "bert-large-uncased-whole-word-masking-finetuned-squad"
BUNDLED_NAME = "minilm-l6-squad"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models" / BUNDLED_NAME
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PREPARED_FILES = ("bertqa-prepared.json", "prepared.safetensors")   # a saved int8 model (bertqa.saved)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")      # as bertqa.qa.tokenizer reads them
HUB_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
             "merges.txt", "special_tokens_map.json", "model.safetensors"]


def check_model_dir(path: Path) -> Path:
    """Raise ModelError naming what is missing; return the directory."""
    if not path.exists():
        raise ModelError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise ModelError(f"model path {path} is not a directory (expected a Hugging Face model directory)")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if (path / PREPARED_FILES[0]).is_file():
        if not (path / PREPARED_FILES[1]).is_file():
            missing.append(PREPARED_FILES[1])
    elif (path / EXPORT_MANIFEST).is_file():                  # an ONNX export (bertqa.export)
        if not (path / EXPORT_MODEL).is_file():
            missing.append(EXPORT_MODEL)
    elif not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    if missing:
        raise ModelError(f"model directory {path} is incomplete: missing {', '.join(missing)}")
    return path


def looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else, or anything that exists here, is a path."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1


def resolve_model(name: str | None) -> Path:
    """A model directory for `name`: None (the default hub model), 'bundled', a path, or a hub id."""
    name = name or DEFAULT_MODEL
    if name in ("bundled", BUNDLED_NAME):
        return check_model_dir(BUNDLED_DIR)
    if looks_like_path(name):
        return check_model_dir(Path(name).expanduser())
    return check_model_dir(fetch_from_hub(name))


def fetch_from_hub(repo_id: str) -> Path:
    """The hub snapshot of repo_id (cache first; HF_HUB_OFFLINE honoured); ModelUnavailable if none."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo_id):
        raise ModelError(f"{repo_id!r} is neither an existing directory nor a valid hub model id")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelUnavailable(f"cannot fetch {repo_id}: huggingface_hub is not installed") from e
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    try:
        # Cached copy first, so that an offline machine never waits on the network.
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelUnavailable(f"{repo_id} is not a local directory, not in the Hugging Face cache, "
                               "and HF_HUB_OFFLINE is set")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelUnavailable(f"{repo_id} is not a local directory, not cached, and could not be "
                               f"downloaded ({reason[:200]})") from e


# -- weights ------------------------------------------------------------------------------------

def read_config(path: Path) -> BertConfig:
    """config.json of any supported family (bertqa.model.families) as a BertConfig."""
    file = path / "config.json"
    try:
        raw = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {file}: {e}") from e
    if not isinstance(raw, dict):
        raise ModelError(f"{file}: expected a JSON object")
    family = family_for(raw.get("model_type"), str(file))
    try:
        return BertConfig.from_dict({**family.config(raw), "model_type": family.model_type})
    except (TypeError, ValueError, AssertionError) as e:
        raise ModelError(f"{file}: {e}") from None


def map_name(name: str, family: Family | str = "bert") -> str | None:
    """Checkpoint tensor name -> BertForQA name (query/key/value still apart); None if unused."""
    return (family_for(family) if isinstance(family, str) else family).map_name(name)


_HF_MODULES = {"embeddings.word": "bert.embeddings.word_embeddings",
               "embeddings.position": "bert.embeddings.position_embeddings",
               "embeddings.token_type": "bert.embeddings.token_type_embeddings",
               "embeddings.norm": "bert.embeddings.LayerNorm",
               "attention.out": "attention.output.dense", "attention.norm": "attention.output.LayerNorm",
               "ffn.up": "intermediate.dense", "ffn.down": "output.dense", "ffn.norm": "output.LayerNorm"}


def hf_state_dict(model: BertForQA) -> dict[str, torch.Tensor]:
    """The model's tensors under Hugging Face BertForQuestionAnswering names, query/key/value
    apart (views, no copies): the inverse of map_name, for writing checkpoints (BERT only)."""
    assert model.config.model_type == "bert", f"hf_state_dict writes BERT names, not {model.config.model_type}'s"
    out = {}
    for name, t in model.state_dict().items():
        module, _, kind = name.rpartition(".")
        m = re.fullmatch(r"layers\.(\d+)\.(\w+\.\w+)", module)
        if m and m[2] == "attention.qkv":               # rows [query; key; value]
            for part, rows in zip(("query", "key", "value"), t.chunk(3)):
                out[f"bert.encoder.layer.{m[1]}.attention.self.{part}.{kind}"] = rows
        elif m:
            out[f"bert.encoder.layer.{m[1]}.{_HF_MODULES[m[2]]}.{kind}"] = t
        else:
            out[f"{_HF_MODULES.get(module, module)}.{kind}"] = t
    return out


def refused_pickle(path: Path, error: Exception) -> str:
    """One line for a pytorch_model.bin that torch.load(weights_only=True) refuses: what it asked
    for, and to convert it (torch's own message suggests weights_only=False, which would run it)."""
    found = re.search(r"unsupported GLOBAL (\S+)", str(error))
    wants = f"it asks to call {found[1]}" if found else "it holds objects other than tensors"
    return (f"{path} is refused: {wants}, and bertqa loads pickled checkpoints as tensors only "
            "(a pickle can run code); convert it to model.safetensors, e.g. with transformers' "
            "save_pretrained(DIR, safe_serialization=True) on a copy you trust")


class _Checkpoint:
    """Name -> tensor reader over model.safetensors (mmap) or pytorch_model.bin (weights_only)."""

    def __init__(self, path: Path):
        st = path / "model.safetensors"
        try:
            if st.is_file():
                from safetensors import safe_open
                self._file = safe_open(str(st), framework="pt")
                self.names = list(self._file.keys())
                self.get = self._file.get_tensor
            else:
                bin_path = path / "pytorch_model.bin"
                try:
                    state = torch.load(bin_path, map_location="cpu", weights_only=True, mmap=True)
                except pickle.UnpicklingError as e:
                    raise ModelError(refused_pickle(bin_path, e)) from None
                self.names = list(state)
                self.get = state.__getitem__
        except ModelError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"cannot read the weights in {path}: {first}") from e


def load_model(path: Path) -> BertForQA:
    """BertForQA with the weights of the checkpoint in `path` (fp32, eval mode)."""
    ckpt = _Checkpoint(path)
    return model_from_tensors(read_config(path), ckpt.names, ckpt.get, str(path))


_QKV = re.compile(r"layers\.(\d+)\.attention\.(query|key|value)\.(weight|bias)")


def tensor_sources(names, family: Family | str = "bert") -> dict[str, list[str]]:
    """BertForQA tensor name -> the checkpoint tensors it is made of, in order: one, or three
    for the fused projection (rows [query; key; value]). An incomplete triple is left out, so
    that it is reported as missing."""
    sources, qkv = {}, {}
    for name in names:
        ours = map_name(name, family)
        if ours is None:
            continue
        m = _QKV.fullmatch(ours)
        if m:
            qkv.setdefault(f"layers.{m[1]}.attention.qkv.{m[3]}", {})[m[2]] = name
        else:
            sources[ours] = [name]
    for ours, parts in qkv.items():
        if len(parts) == 3:
            sources[ours] = [parts["query"], parts["key"], parts["value"]]
    return sources


def read_fp32(get, names: list[str]) -> torch.Tensor:
    """get(name) of each name as fp32, stacked along dim 0 when there are several."""
    parts = [get(n).to(torch.float32) for n in names]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def check_shapes(shapes: dict[str, tuple], model: BertForQA, source: str) -> None:
    """ModelError unless `shapes` (our name -> shape) covers exactly the model's tensors."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise ModelError(f"{source} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    extra = sorted(set(shapes) - set(expected))
    if extra:
        raise ModelError(f"{source} has tensors that config.json does not imply, e.g. {extra[:3]}")
    for name, shape in shapes.items():
        if tuple(shape) != expected[name]:
            raise ModelError(f"{source}: tensor for {name} has shape {tuple(shape)}, "
                             f"config.json implies {expected[name]}")


def meta_model(config: BertConfig) -> BertForQA:
    """BertForQA on the `meta` device, its initializers skipped: every tensor is assigned next.
    (nn.Embedding's init.normal_ on `meta` imports torch's Python meta kernels: measured 1 s
    and 170 MB resident, on every start.)"""
    skipped = {name: getattr(nn.init, name) for name in ("normal_", "uniform_", "kaiming_uniform_")}
    try:
        for name in skipped:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        with torch.device("meta"):
            return BertForQA(config)
    finally:
        for name, fn in skipped.items():
            setattr(nn.init, name, fn)


def model_from_tensors(config: BertConfig, names, get, source: str = "checkpoint") -> BertForQA:
    """Build on `meta`, then assign each tensor get(name) (converted to fp32) by name mapping.
    Query, key and value are fused in the order [query; key; value]."""
    model = meta_model(config)
    state = {ours: read_fp32(get, srcs) for ours, srcs in tensor_sources(names, config.model_type).items()}
    check_shapes({k: v.shape for k, v in state.items()}, model, source)
    model.load_state_dict(state, assign=True)
    return model.eval()


# -- streaming: Linear weights read when asked for ---------------------------------------------

def can_stream(path: Path) -> bool:
    return (path / "model.safetensors").is_file()


def lazy_model(path: Path) -> tuple[BertForQA, dict[str, Callable[[], tuple]]]:
    """BertForQA with every tensor that is not an nn.Linear's read (fp32), its nn.Linear layers
    left on `meta`, and for each Linear a callable that reads its fp32 (weight, bias) from
    model.safetensors when called, with plain file reads (see safetensors_io), fresh each call.
    Shapes are checked against the header before anything is read."""
    ckpt = SafetensorsFile(path / "model.safetensors")
    config = read_config(path)
    model = meta_model(config)
    sources = tensor_sources(ckpt.names, config.model_type)
    check_shapes({ours: _fused_shape([ckpt.shape(n) for n in srcs]) for ours, srcs in sources.items()},
                 model, str(ckpt.path))
    linears = [name for name, m in model.named_modules() if type(m) is nn.Linear]
    owned = {f"{name}.{p}" for name in linears for p in ("weight", "bias")}
    state = {ours: read_fp32(ckpt.get, srcs) for ours, srcs in sources.items() if ours not in owned}
    model.load_state_dict(state, assign=True, strict=False)

    def fetcher(name: str):
        def fetch():
            bias = sources.get(f"{name}.bias")
            weight = read_fp32(ckpt.get, sources[f"{name}.weight"])
            return weight, None if bias is None else read_fp32(ckpt.get, bias)
        return fetch
    return model.eval(), {name: fetcher(name) for name in linears}


def _fused_shape(shapes: list[tuple]) -> tuple:
    return (sum(s[0] for s in shapes), *shapes[0][1:]) if len(shapes) > 1 else tuple(shapes[0])
