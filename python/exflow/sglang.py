"""SGLang's `.pt` files: expert-distribution recorder dumps and `--init-expert-location` files.

SGLang writes them with torch.save; reading one imports torch (and only then). What a file holds
decides what comes back (docs/formats.md, "SGLang recorder and init `.pt` files"):

- a `per_token` recorder dump, {"records": [{"topk_ids_of_layer": [layers, tokens, k] physical
  ids, -1 padded, ...}, ...], "last_physical_to_logical_map": [layers, slots]}: a trace, the
  logical ids of every recorded token [T, L] or [T, L, k], dense layers (never routed) and columns
  beyond the top-k dropped;
- a `stat` recorder dump {"logical_count": [steps, layers, E], "rank": ..., ...}, or an init file
  holding `logical_count`: per-layer loads [layers, E] summed over steps, every decoder layer kept;
- an init file holding `physical_to_logical_map` [layers, slots]: that map.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

TORCH_HINT = "(Debian: apt install python3-torch)"

KINDS = ("trace", "loads", "physical_to_logical_map")


@dataclass(frozen=True)
class SglangFile:
    """What an SGLang `.pt` file holds, as NumPy arrays.

    kind: "trace" (a per_token dump), "loads" (a stat dump or an init file's logical_count) or
    "physical_to_logical_map" (an init file's map).
    array: trace int16/int32 [T, L] or [T, L, k] of logical ids; loads int64 [layers, E];
    physical_to_logical_map int64 [layers, slots].
    layer_ids: the SGLang layer id of each layer of `array` (a trace keeps only routed layers).
    experts: logical experts per layer.
    records: forward passes holding tokens (traces; 0 otherwise).
    """

    kind: str
    path: str
    array: np.ndarray
    layer_ids: tuple = field(default=())
    experts: int = 0
    records: int = 0

    @property
    def layers(self) -> int:
        return len(self.layer_ids)

    def summary(self) -> dict:
        """The file's shape as a JSON-ready dict (what `python3 -m exflow convert --json` prints)."""
        out = {"input": self.path, "kind": self.kind, "layers": self.layers,
               "experts": self.experts, "sglang_layers": list(self.layer_ids)}
        if self.kind == "trace":
            out.update(tokens=int(self.array.shape[0]),
                       k=int(self.array.shape[2]) if self.array.ndim == 3 else 1,
                       dtype=self.array.dtype.str, records=self.records)
        elif self.kind == "loads":
            out["total"] = int(self.array.sum())
        else:
            out["slots"] = int(self.array.shape[1])
        return out


def _import_torch(path):
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs torch {TORCH_HINT}") from None
    return torch


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_pt(path):
    """torch.load(path) on the CPU, tensors only (weights_only); errors as one-line ValueError or
    OSError naming the file."""
    path = os.fspath(path)
    torch = _import_torch(path)
    try:
        with open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except OSError as e:
        raise OSError(f"{path}: cannot read ({e.strerror or _first_line(e)})") from None
    except Exception as e:  # torch reports a bad file as RuntimeError, UnpicklingError, ...
        raise ValueError(f"{path}: not a torch.save file torch can read safely "
                         f"({_first_line(e)})") from None


def _int_array(value, what):
    """An integer NumPy array from a tensor, array or nested list; ValueError naming `what`."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value)
    except Exception:  # ragged lists
        raise ValueError(f"{what} is not a rectangular array") from None
    if a.dtype.kind not in "iu" and not (a.size == 0 and a.dtype.kind == "f"):  # [] is float64
        raise ValueError(f"{what} must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _shape(a):
    return "[" + ", ".join(str(n) for n in a.shape) + "]"


def _check_map(p2l, what):
    if p2l.ndim != 2 or p2l.shape[0] == 0 or p2l.shape[1] == 0:
        raise ValueError(f"{what} must be a non-empty [layers, slots] array, got shape {_shape(p2l)}")
    bad = np.argwhere(p2l < 0)
    if len(bad):
        layer, slot = bad[0]
        raise ValueError(f"{what} layer {layer} slot {slot} is {p2l[layer, slot]}")


def _trace(path, data):
    if "last_physical_to_logical_map" not in data:
        raise ValueError(f"{path}: a per_token dump needs 'last_physical_to_logical_map' "
                         f"(keys: {sorted(map(str, data))})")
    p2l = _int_array(data["last_physical_to_logical_map"],
                     f"{path}: last_physical_to_logical_map")
    _check_map(p2l, f"{path}: last_physical_to_logical_map")
    layers, slots = p2l.shape
    records = data["records"]
    if not isinstance(records, (list, tuple)):
        raise ValueError(f"{path}: records must be a list, got {type(records).__name__}")
    kept = []  # (record index, ids [layers, tokens, width])
    width, width_record = None, None
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise ValueError(f"{path}: record {i} is a {type(r).__name__}, expected a dict")
        if "topk_ids_of_layer" not in r:
            raise ValueError(f"{path}: record {i} has no topk_ids_of_layer (record with "
                             "--expert-distribution-recorder-mode per_token)")
        ids = _int_array(r["topk_ids_of_layer"], f"{path}: record {i}: topk_ids_of_layer")
        if ids.ndim != 3 or ids.shape[0] != layers or ids.shape[2] == 0:
            raise ValueError(f"{path}: record {i}: topk_ids_of_layer has shape {_shape(ids)}, "
                             f"expected [{layers}, tokens, k] (layers of last_physical_to_logical_map)")
        if width is not None and ids.shape[2] != width:
            raise ValueError(f"{path}: record {i}: topk_ids_of_layer has {ids.shape[2]} columns, "
                             f"record {width_record} {width}")
        if width is None:
            width, width_record = ids.shape[2], i
        bad = np.argwhere((ids < -1) | (ids >= slots))
        if len(bad):
            layer, t, c = bad[0]
            raise ValueError(f"{path}: record {i}: SGLang layer {layer} token {t} column {c} is "
                             f"physical id {ids[layer, t, c]}, outside 0..{slots - 1}")
        if ids.shape[1] > 0:
            kept.append((i, ids))
    if not kept:
        raise ValueError(f"{path}: no record holds tokens")
    routed = np.zeros((layers, width), dtype=bool)  # [layer, column]: some token routed there
    for _, ids in kept:
        routed |= (ids >= 0).any(axis=1)
    moe = np.flatnonzero(routed.any(axis=1))
    if len(moe) == 0:
        raise ValueError(f"{path}: every expert id is -1")
    k = int(np.flatnonzero(routed.any(axis=0)).max()) + 1
    maps = p2l[moe]
    parts = []
    for i, ids in kept:
        sub = ids[moe][:, :, :k]
        bad = np.argwhere(sub < 0)
        if len(bad):
            layer, t, c = bad[0]
            raise ValueError(f"{path}: record {i}: SGLang layer {moe[layer]} token {t} column {c} "
                             f"is -1 inside the top-{k}")
        n = sub.shape[1]
        logical = np.take_along_axis(maps, sub.reshape(len(moe), n * k), axis=1)
        parts.append(logical.reshape(len(moe), n, k).transpose(1, 0, 2))
    trace = np.concatenate(parts, axis=0)
    dtype = np.int16 if trace.max() < 32768 else np.int32
    trace = np.ascontiguousarray(trace.astype(dtype))
    if k == 1:
        trace = trace[:, :, 0].copy()
    return SglangFile("trace", path, trace, tuple(int(x) for x in moe),
                      int(p2l.max()) + 1, len(kept))


def _loads(path, data):
    counts = _int_array(data["logical_count"], f"{path}: logical_count")
    if counts.ndim == 2:
        counts = counts[None]
    if counts.ndim != 3 or 0 in counts.shape:
        raise ValueError(f"{path}: logical_count must be a non-empty [steps, layers, experts] or "
                         f"[layers, experts] array, got shape {_shape(counts)}")
    bad = np.argwhere(counts < 0)
    if len(bad):
        s, layer, e = bad[0]
        raise ValueError(f"{path}: logical_count step {s} layer {layer} expert {e} is "
                         f"{counts[s, layer, e]}")
    loads = counts.sum(axis=0, dtype=np.int64)
    return SglangFile("loads", path, loads, tuple(range(loads.shape[0])), int(loads.shape[1]))


def _phy2log(path, data):
    p2l = _int_array(data["physical_to_logical_map"], f"{path}: physical_to_logical_map")
    _check_map(p2l, f"{path}: physical_to_logical_map")
    experts = int(p2l.max()) + 1
    for layer, row in enumerate(p2l):
        present = np.zeros(experts, dtype=bool)
        present[row] = True
        if not present.all():
            raise ValueError(f"{path}: physical_to_logical_map layer {layer} has no slot for "
                             f"expert {int(np.flatnonzero(~present)[0])} (of 0..{experts - 1})")
    return SglangFile("physical_to_logical_map", path, p2l, tuple(range(p2l.shape[0])), experts)


def read_sglang_dump(path) -> SglangFile:
    """Read an SGLang `.pt` file (recorder dump or init file) into a SglangFile.

    Raises ImportError when torch is missing, OSError when the file cannot be read and ValueError
    (one line naming the file and the record, layer, token or column at fault) for anything else.
    """
    path = os.fspath(path)
    data = load_pt(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds a {type(data).__name__}, expected a dict (an SGLang "
                         "recorder dump or init file)")
    if "records" in data:
        return _trace(path, data)
    if "physical_to_logical_map" in data:
        return _phy2log(path, data)
    if "logical_count" in data:
        return _loads(path, data)
    raise ValueError(f"{path}: not an SGLang recorder dump or init file: keys "
                     f"{sorted(map(str, data))}, expected 'records' (per_token), 'logical_count' "
                     "(stat) or 'physical_to_logical_map'")
