"""exflow: expert placement for Mixture-of-Experts inference from routing traces (ExFlow,
arXiv 2401.08383). See docs/python.md.

The native extension exflow._native does the work (solve, evaluate, profile, Placement,
read_placement); exflow.rebalance_experts is DeepSeek EPLB's entry point, optionally planned
from routing ids, and exflow.policies adapts it to vLLM's and SGLang's EPLB calls; exflow.sglang
reads SGLang's `.pt` recorder dumps and init files (torch is imported only for those);
`python3 -m exflow convert` turns such a file into exflow's inputs.
"""
import os as _os

from . import _native
from ._native import *  # noqa: F401,F403 (every public name of the native module)
from ._native import Placement, evaluate, profile, solve
from .rebalance import rebalance_experts
from .sglang import SglangFile, read_sglang_dump

Placement.__module__ = "exflow"

__all__ = [name for name in dir(_native) if not name.startswith("_")] + [
    "SglangFile", "read_sglang_dump", "rebalance_experts"]


def read_placement(path, layers, experts, gpus_per_node, nodes=1, *, dense_layers=None):
    """read_placement(path, layers, experts, gpus_per_node, nodes=1, *, dense_layers=None)
    -> Placement

    A placement from a file, as exflow eval reads it: the CSV (Expert,Node), SGLang's
    expert-location JSON, vllm-ascend's expert map JSON, EPLB's maps JSON, or an SGLang init `.pt`
    holding physical_to_logical_map (needs torch). Its layers and experts must be `layers` x
    `experts`. dense_layers: the model's dense decoder layers (None, a count, a list of layers or
    a model name), whose rows SGLang's and EPLB's maps hold and the placement does not.
    """
    path = _os.fspath(path)
    if not path.lower().endswith(".pt"):
        return _native.read_placement(path, layers, experts, gpus_per_node, nodes,
                                      dense_layers=dense_layers)
    f = read_sglang_dump(path)
    if f.kind != "physical_to_logical_map":
        raise ValueError(f"{path}: holds {f.kind}, not a physical_to_logical_map (a placement)")
    p = _native._placement_from_phy2log(f.array, gpus_per_node, nodes, experts, path,
                                        dense_layers)
    if p.layers != layers or p.experts != experts:
        raise ValueError(f"{path}: placement has {p.layers} layers x {p.experts} experts, "
                         f"the trace {layers} x {experts}")
    return p
