"""exflow.rebalance_experts: DeepSeek EPLB's entry point (github.com/deepseek-ai/EPLB, eplb.py),
with the same arguments and maps, optionally planned from recent routing instead of loads alone.

Without `routing` the answer is EPLB's own, ties included (exflow::rebalance_experts, the C++
re-implementation checked against upstream's outputs). With `routing`, recent top-k ids, the
maps come from exflow.solve: the traffic of the engine's communication scheme is minimised under a
per-layer load limit, with num_replicas - experts redundant slots. NumPy in gives NumPy out; a
torch tensor in gives torch tensors out on its device (torch is imported only then).
See docs/python.md.
"""
from __future__ import annotations

import operator

import numpy as np

from . import _native

MAP_NAMES = ("phy2log", "log2phy", "logcnt")


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus, *, routing=None,
                      scheme="deepep", previous=None, max_moves=None, max_load_ratio=None,
                      time_limit=None):
    """rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus, *, routing=None,
    scheme="deepep", previous=None, max_moves=None, max_load_ratio=None, time_limit=None)
    -> (phy2log, log2phy, logcnt)

    weight: loads [layers, experts] (integer or real, rounded to float32 as upstream does).
    num_replicas: physical slots per layer, at least the experts and a multiple of num_gpus;
    num_gpus a multiple of num_nodes; num_groups: expert groups, kept on one node when num_nodes
    divides them (EPLB's hierarchical policy; the groups must then divide the experts).
    routing: None (EPLB's answer), recent top-k ids [tokens, layers, k] (or [tokens, layers])
    whose layers are weight's, or pairwise co-activation counts [layers, experts, experts]
    (entry [l, i, j]: tokens of layer l routed to both i and j; one triangle or both; the
    diagonal is not used): the scheme's traffic ("coherent", "standard", "deepep", "deepep-ll";
    counts carry no inter-layer routing, so not "coherent") is minimised with each layer's busiest
    GPU under max_load_ratio times the mean (None: "auto", never worse than contiguous; a number
    >= 1; "none"). weight then gives only the shapes. Counts are planned as a sample of
    PAIR_ROWS two-expert tokens per layer, apportioned to the pairs by their counts (the clique
    expansion of each token's experts; docs/python.md). previous (the current phy2log [layers, num_replicas]): every expert that stays on
    its GPU keeps its slot there (so an engine reloads only the slots that change); with routing
    the search also starts from it and changes at most max_moves slots (None: any number).
    time_limit: seconds for the search with routing (None: until it converges); a quarter for
    the graph solver, the rest for the token search.

    Returns int64 phy2log [layers, num_replicas] (GPU g holds slots g*S .. (g+1)*S - 1,
    S = num_replicas / num_gpus), log2phy [layers, experts, X] (each expert's slots, padded with
    -1; X the most copies) and logcnt [layers, experts] (copies). Bad input raises ValueError
    naming the argument.
    """
    device = _torch_device(weight, routing)
    loads = _loads_array(weight)
    layers, experts = loads.shape
    num_replicas = _positive_int(num_replicas, "num_replicas")
    num_groups = _positive_int(num_groups, "num_groups")
    num_nodes = _positive_int(num_nodes, "num_nodes")
    num_gpus = _positive_int(num_gpus, "num_gpus")
    _check_topology(experts, num_replicas, num_groups, num_nodes, num_gpus, loads.shape)
    ids = None if routing is None else _routing_ids(routing, layers, experts, scheme)
    options = _previous_options(previous, max_moves, layers, experts, num_replicas)
    if time_limit is not None:
        seconds = _seconds(time_limit, "time_limit")
        if ids is None:
            raise ValueError("time_limit: only a search from routing has one (loads alone give "
                             "EPLB's answer at once)")
        options.update(time_limit=seconds / 4, token_time_limit=seconds * 3 / 4)
    if ids is None:
        if "max_moves" in options:
            raise ValueError("max_moves: a move budget needs routing ids [tokens, layers, k] "
                             "(loads alone give EPLB's answer, which moves what it moves)")
        maps = _native._rebalance_experts(loads, num_replicas, num_groups, num_nodes, num_gpus)
        if "previous" in options:
            maps = _maps_of(_keep_slots(options["previous"], maps["phy2log"], num_gpus), experts)
    else:
        placement = _native.solve(
            ids, gpus_per_node=num_gpus // num_nodes, nodes=num_nodes, experts=experts,
            redundant_total=num_replicas - experts, scheme=scheme,
            max_load_ratio="auto" if max_load_ratio is None else max_load_ratio, **options)
        maps = placement.to_eplb()
        if maps["phy2log"].shape != (layers, num_replicas):
            raise ValueError(f"routing: the plan has {maps['phy2log'].shape[1]} slots per layer, "
                             f"not num_replicas={num_replicas}")
        if "previous" in options:
            maps = _maps_of(_keep_slots(options["previous"], maps["phy2log"], num_gpus), experts)
    return tuple(_output(maps[name], device) for name in MAP_NAMES)


def _keep_slots(previous, phy2log, num_gpus):
    """phy2log with every expert that stays on a GPU in its previous slot there; the slots that
    change take the GPU's new experts in ascending order (an engine then loads only those)."""
    out = np.array(phy2log, dtype=np.int64)
    layers, slots = out.shape
    per_gpu = slots // num_gpus
    for layer in range(layers):
        for gpu in range(num_gpus):
            span = slice(gpu * per_gpu, (gpu + 1) * per_gpu)
            waiting = sorted(int(e) for e in out[layer, span])
            kept = []
            for e in previous[layer, span]:
                e = int(e)
                if e in waiting:
                    waiting.remove(e)
                    kept.append(e)
                else:
                    kept.append(None)
            out[layer, span] = [waiting.pop(0) if e is None else e for e in kept]
    return out


def _maps_of(phy2log, experts):
    """EPLB's three maps from phy2log: each expert's slots ascending, padded with -1."""
    layers = phy2log.shape[0]
    logcnt = np.zeros((layers, experts), dtype=np.int64)
    for layer in range(layers):
        logcnt[layer] = np.bincount(phy2log[layer], minlength=experts)
    log2phy = np.full((layers, experts, int(logcnt.max())), -1, dtype=np.int64)
    filled = np.zeros((layers, experts), dtype=np.int64)
    for layer in range(layers):
        for slot, e in enumerate(phy2log[layer]):
            log2phy[layer, e, filled[layer, e]] = slot
            filled[layer, e] += 1
    return {"phy2log": phy2log, "log2phy": log2phy, "logcnt": logcnt}


def _previous_options(previous, max_moves, layers, experts, num_replicas):
    """solve()'s keywords for `previous` and `max_moves`, checked; {} when neither is given."""
    if previous is None and max_moves is None:
        return {}
    options = {}
    if previous is not None:
        phy2log = _as_numpy(previous, "previous")
        if phy2log.dtype.kind not in "iu" or phy2log.shape != (layers, num_replicas):
            raise ValueError(f"previous must be an integer phy2log [layers, num_replicas] = "
                             f"[{layers}, {num_replicas}], got {phy2log.dtype} "
                             f"{list(phy2log.shape)}")
        if phy2log.size and (phy2log.min() < 0 or phy2log.max() >= experts):
            raise ValueError(f"previous names experts {phy2log.min()}..{phy2log.max()}, outside "
                             f"0..{experts - 1}")
        options["previous"] = phy2log.astype(np.int64)
    if max_moves is not None:
        moves = _index(max_moves, "max_moves")
        if moves < 0:
            raise ValueError(f"max_moves must be >= 0, got {moves}")
        options["max_moves"] = moves
    return options


def _check_topology(experts, num_replicas, num_groups, num_nodes, num_gpus, shape):
    if num_gpus % num_nodes:
        raise ValueError(f"num_gpus ({num_gpus}) must be a multiple of num_nodes ({num_nodes})")
    if num_replicas < experts:
        raise ValueError(f"num_replicas ({num_replicas}) must be at least the experts of weight "
                         f"{list(shape)} ({experts})")
    if num_replicas % num_gpus:
        raise ValueError(f"num_replicas ({num_replicas}) must be a multiple of num_gpus "
                         f"({num_gpus})")
    if num_groups % num_nodes == 0 and experts % num_groups:
        raise ValueError(f"num_groups ({num_groups}) must divide the experts of weight "
                         f"{list(shape)} ({experts})")


def _loads_array(weight):
    loads = _as_numpy(weight, "weight")
    if loads.dtype.kind not in "iuf":
        raise ValueError(f"weight must be an integer or floating-point array, got {loads.dtype}")
    if loads.ndim != 2 or 0 in loads.shape:
        raise ValueError(f"weight must be [layers, experts], got shape {list(loads.shape)}")
    if loads.dtype.kind == "f":
        bad = ~np.isfinite(loads) | (loads < 0)
    else:
        bad = loads < 0
    if bad.any():
        layer, expert = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"weight must be finite and >= 0, got {loads[layer, expert]} at layer "
                         f"{layer} expert {expert} of {list(loads.shape)}")
    return loads


PAIR_ROWS = 4096


def _routing_ids(routing, layers, experts, scheme):
    """Top-k ids [tokens, layers, k] for exflow.solve: routing's ids, or a pair sample drawn from
    co-activation counts [layers, experts, experts]."""
    ids = _as_numpy(routing, "routing")
    if ids.shape == (layers, experts, experts):
        return _pair_ids(ids, scheme)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"routing must be integer top-k ids [tokens, layers, k], got dtype "
                         f"{ids.dtype}")
    if ids.ndim not in (2, 3) or ids.shape[1] != layers:
        raise ValueError(f"routing must be top-k ids [tokens, layers, k] with the {layers} "
                         f"layers of weight, got shape {list(ids.shape)}")
    if ids.size and (ids.min() < 0 or ids.max() >= experts):
        bad = np.argwhere((ids < 0) | (ids >= experts))[0]
        raise ValueError(f"routing names expert {ids[tuple(bad)]} at token {bad[0]} layer "
                         f"{bad[1]}, outside 0..{experts - 1} (weight has {experts} experts)")
    return ids


def _pair_ids(counts, scheme):
    """PAIR_ROWS tokens per layer, each routed to two experts [PAIR_ROWS, layers, 2], pair (i, j)
    of layer l taking a share of the rows proportional to counts[l, i, j] + counts[l, j, i]
    (largest remainders, ties to the lower pair), in an order shuffled with a fixed seed so that
    the GPUs owning the rows see every pair alike. Each token of a top-k layer becomes its
    k (k - 1) / 2 pairs: keeping co-activated experts on one node keeps the pair on it."""
    if scheme == "coherent":
        raise ValueError("routing: co-activation counts [layers, experts, experts] carry no "
                         "routing between layers, which the coherent scheme needs; give top-k "
                         "ids [tokens, layers, k] or another scheme")
    if counts.dtype.kind not in "iuf":
        raise ValueError(f"routing: co-activation counts must be integer or real, got dtype "
                         f"{counts.dtype}")
    layers, experts, _ = counts.shape
    if counts.dtype.kind == "f":
        bad = ~np.isfinite(counts) | (counts < 0)
    else:
        bad = counts < 0
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"routing: co-activation counts must be finite and >= 0, got "
                         f"{counts[where]} at {list(where)} of {list(counts.shape)}")
    first, second = np.triu_indices(experts, 1)
    pairs = counts[:, first, second].astype(np.float64) + counts[:, second, first]
    totals = pairs.sum(axis=1)
    if not (totals > 0).all():
        layer = int(np.argmin(totals > 0))
        raise ValueError(f"routing: co-activation counts of layer {layer} pair no two experts "
                         f"(top-1 routing?): give loads alone or top-k ids")
    share = pairs * (PAIR_ROWS / totals)[:, None]
    rows = np.floor(share).astype(np.int64)
    rng = np.random.default_rng(0)
    ids = np.empty((PAIR_ROWS, layers, 2), dtype=np.int64)
    for layer in range(layers):
        left = PAIR_ROWS - int(rows[layer].sum())
        if left > 0:
            remainder = share[layer] - rows[layer]
            rows[layer, np.argsort(-remainder, kind="stable")[:left]] += 1
        pick = np.repeat(np.arange(len(first)), rows[layer])[rng.permutation(PAIR_ROWS)]
        ids[:, layer, 0] = first[pick]
        ids[:, layer, 1] = second[pick]
    return ids


def _seconds(value, name):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
    if isinstance(value, (bool, np.bool_)) or not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return v


def _is_torch(x):
    return type(x).__module__.split(".")[0] == "torch"


def _torch_device(*arrays):
    """The device of the first torch tensor among arrays, or None."""
    for x in arrays:
        if _is_torch(x):
            return x.device
    return None


def _as_numpy(x, name):
    """x as a NumPy array; a torch tensor is brought to the CPU, real ones as float64."""
    if _is_torch(x):
        t = x.detach().cpu()
        if t.is_floating_point():
            t = t.double()
        return t.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be an array: {e}") from None


def _output(array, device):
    if device is None:
        return array
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def _positive_int(value, name):
    v = _index(value, name)
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v


def _index(value, name):
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {type(value).__name__}") from None
