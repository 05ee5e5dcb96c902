"""safetensors read and written with plain file I/O, one tensor at a time.

The format: an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the tensor bytes (offsets are
relative to the end of the header), little-endian, row-major.

Why not the safetensors package here: its reader memory-maps the file, and every page of a
mapping that is touched counts in the process's resident set (RssFile) until it is unmapped;
its writer serializes all tensors into one buffer first. Reading each tensor into a fresh buffer
and writing each straight from its own memory keeps the resident set at what is alive, so a
model can be quantized layer by layer from a checkpoint larger than the memory it ends up in.
"""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import torch

from bertqa.errors import ModelError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000          # the limit the safetensors package itself applies

assert sys.byteorder == "little", "safetensors data is little-endian; this reader does not swap bytes"


class SafetensorsFile:
    """Name -> tensor over one .safetensors file: `names`, `shape(name)`, `dtype(name)`, and
    `get(name)`, which reads that tensor's bytes into a new tensor of the file's dtype."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if not 2 <= n <= MAX_HEADER_BYTES:
                    raise ValueError(f"header length {n} is not plausible")
                header = json.loads(f.read(n))
        except (OSError, ValueError, struct.error) as e:   # JSONDecodeError is a ValueError
            raise ModelError(f"cannot read the weights in {self.path}: not a safetensors file ({e})") from e
        self.data_start = 8 + n
        self.metadata = header.pop("__metadata__", None) or {}
        self.entries = header
        for name, entry in header.items():
            self._check_entry(name, entry)
        self.names = list(header)

    def _check_entry(self, name: str, entry) -> None:
        try:
            dtype = DTYPES[entry["dtype"]]
            begin, end = entry["data_offsets"]
            numel = 1
            for d in entry["shape"]:
                numel *= int(d)
            ok = 0 <= begin <= end and end - begin == numel * dtype.itemsize
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{self.path}: header entry {name!r} is malformed ({e!r})") from None
        if not ok:
            raise ModelError(f"{self.path}: tensor {name!r} has data_offsets {entry['data_offsets']} "
                             f"that do not match its shape {entry['shape']} and dtype {entry['dtype']}")

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def dtype(self, name: str) -> torch.dtype:
        return DTYPES[self.entries[name]["dtype"]]

    def get(self, name: str) -> torch.Tensor:
        """A new tensor holding `name`'s bytes (not a view of the file, not shared)."""
        if name not in self.entries:
            raise ModelError(f"{self.path} has no tensor {name!r}")
        entry = self.entries[name]
        begin, end = entry["data_offsets"]
        buf = bytearray(end - begin)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            got = f.readinto(buf)
        if got != len(buf):
            raise ModelError(f"{self.path} is truncated: tensor {name!r} needs {len(buf)} bytes, "
                             f"{got} are there")
        dtype, shape = DTYPES[entry["dtype"]], entry["shape"]
        if not buf:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(shape)


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (CPU, any DTYPES dtype) as one .safetensors file, tensor by tensor from
    their own memory: no second copy of the whole set is ever made."""
    header, offset = {}, 0
    for name, t in tensors.items():
        assert t.dtype in DTYPE_NAMES, f"{name}: dtype {t.dtype} has no safetensors name"
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)                       # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for t in tensors.values():
            if t.numel():
                f.write(_as_bytes(t))


def _as_bytes(t: torch.Tensor) -> memoryview:
    """The tensor's bytes, row-major, without a copy when it is already contiguous on the CPU."""
    t = t.detach().to("cpu").contiguous()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())
