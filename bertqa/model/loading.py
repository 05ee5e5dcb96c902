"""Find a model (local directory, bundled, or Hugging Face hub id) and load its weights.

Weights map by name from any `BertForQuestionAnswering` checkpoint onto bertqa's BertForQA. The
model is built on the `meta` device and each tensor is read from the memory-mapped checkpoint,
converted to fp32 and assigned in place, so two fp32 copies of the weights never coexist.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from bertqa.errors import ModelError, ModelUnavailable
from bertqa.model.bert import BertConfig, BertForQA

DEFAULT_MODEL = "bert-large-uncased-whole-word-masking-finetuned-squad"
BUNDLED_NAME = "minilm-l6-squad"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models" / BUNDLED_NAME
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
HUB_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
             "special_tokens_map.json", "model.safetensors"]


def check_model_dir(path: Path) -> Path:
    """Raise ModelError naming what is missing; return the directory."""
    if not path.exists():
        raise ModelError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise ModelError(f"model path {path} is not a directory (expected a Hugging Face model directory)")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
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
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {path / 'config.json'}: {e}") from e
    model_type = raw.get("model_type", "bert")
    if model_type != "bert":
        raise ModelError(f"{path / 'config.json'}: model_type {model_type!r} is not supported (only 'bert')")
    try:
        return BertConfig.from_dict(raw)
    except (TypeError, AssertionError) as e:
        raise ModelError(f"{path / 'config.json'}: {e}") from e


_LAYER = r"(?:bert\.)?encoder\.layer\.(\d+)\."
_RENAMES = [  # checkpoint name (regex) -> our name; old TF-converted names use gamma/beta
    (r"(?:bert\.)?embeddings\.word_embeddings\.weight", r"embeddings.word.weight"),
    (r"(?:bert\.)?embeddings\.position_embeddings\.weight", r"embeddings.position.weight"),
    (r"(?:bert\.)?embeddings\.token_type_embeddings\.weight", r"embeddings.token_type.weight"),
    (r"(?:bert\.)?embeddings\.LayerNorm\.(weight|bias)", r"embeddings.norm.\1"),
    (_LAYER + r"attention\.self\.(query|key|value)\.(weight|bias)", r"layers.\1.attention.\2.\3"),
    (_LAYER + r"attention\.output\.dense\.(weight|bias)", r"layers.\1.attention.out.\2"),
    (_LAYER + r"attention\.output\.LayerNorm\.(weight|bias)", r"layers.\1.attention.norm.\2"),
    (_LAYER + r"intermediate\.dense\.(weight|bias)", r"layers.\1.ffn.up.\2"),
    (_LAYER + r"output\.dense\.(weight|bias)", r"layers.\1.ffn.down.\2"),
    (_LAYER + r"output\.LayerNorm\.(weight|bias)", r"layers.\1.ffn.norm.\2"),
    (r"qa_outputs\.(weight|bias)", r"qa_outputs.\1"),
]
_IGNORED = re.compile(r"(?:bert\.)?(pooler\..*|embeddings\.position_ids)")


def map_name(name: str) -> str | None:
    """Checkpoint tensor name -> BertForQA name (query/key/value still apart); None if unused."""
    name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    for pattern, repl in _RENAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, repl, name)
    if _IGNORED.fullmatch(name):
        return None
    raise ModelError(f"checkpoint tensor {name!r} does not belong to a BERT question-answering model")


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
                state = torch.load(bin_path, map_location="cpu", weights_only=True, mmap=True)
                self.names = list(state)
                self.get = state.__getitem__
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"cannot read the weights in {path}: {e}") from e


def load_model(path: Path) -> BertForQA:
    """BertForQA with the weights of the checkpoint in `path` (fp32, eval mode)."""
    ckpt = _Checkpoint(path)
    return model_from_tensors(read_config(path), ckpt.names, ckpt.get, str(path))


def model_from_tensors(config: BertConfig, names, get, source: str = "checkpoint") -> BertForQA:
    """Build on `meta`, then assign each tensor get(name) (converted to fp32) by name mapping.
    Query, key and value are fused as soon as all three of a layer are read."""
    with torch.device("meta"):
        model = BertForQA(config)
    expected = dict(model.state_dict())
    state, pending_qkv = {}, {}
    for name in names:
        ours = map_name(name)
        if ours is None:
            continue
        tensor = get(name).to(torch.float32)
        m = re.fullmatch(r"layers\.(\d+)\.attention\.(query|key|value)\.(weight|bias)", ours)
        if m:
            parts = pending_qkv.setdefault((m[1], m[3]), {})
            parts[m[2]] = tensor
            if len(parts) == 3:   # rows [query; key; value]
                state[f"layers.{m[1]}.attention.qkv.{m[3]}"] = torch.cat(
                    [parts["query"], parts["key"], parts["value"]])
                del pending_qkv[(m[1], m[3])]
            continue
        state[ours] = tensor
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelError(f"{source} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ModelError(f"{source}: tensor for {name} has shape {tuple(tensor.shape)}, "
                             f"config.json implies {tuple(expected[name].shape)}")
    model.load_state_dict(state, assign=True)
    return model.eval()
