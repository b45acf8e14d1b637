"""Adapters that put exflow.rebalance_experts where serving engines call their EPLB.

- vLLM: ExflowEplbPolicy has the classmethod of vLLM's EPLB policies
  (vllm/distributed/eplb/policy/abstract.py, AbstractEplbPolicy; DefaultEplbPolicy in default.py):
  rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_ranks,
  old_global_expert_indices=None) -> phy2log [layers, num_replicas], an int64 CPU tensor.
  vllm_policy_class() makes it a subclass of vLLM's AbstractEplbPolicy, importing vLLM then.
- SGLang: sglang_rebalance_experts has the signature of rebalance_experts in
  python/sglang/srt/eplb/eplb_algorithms/__init__.py and returns what its "deepseek" and
  "deepseek_hierarchical" algorithms return: (phy2log, log2phy, logcnt), int64 CPU tensors.

Neither engine is imported here; both adapters give EPLB's answer from the loads they are
handed. See docs/python.md.
"""
from __future__ import annotations

from .rebalance import _index, _is_torch, rebalance_experts


class ExflowEplbPolicy:
    """vLLM's EPLB policy interface over exflow.rebalance_experts (duck-typed; see
    vllm_policy_class for a subclass of vLLM's AbstractEplbPolicy)."""

    @classmethod
    def rebalance_experts(cls, weight, num_replicas, num_groups, num_nodes, num_ranks,
                          old_global_expert_indices=None):
        """weight [layers, num_logical_experts] loads; num_ranks: the EP ranks (GPUs).
        Returns phy2log [layers, num_replicas] as an int64 CPU tensor (a NumPy array for NumPy
        weight). old_global_expert_indices, the current phy2log, is passed on as `previous`:
        EPLB's answer with every expert that stays on a GPU in its old slot."""
        options = {}
        if old_global_expert_indices is not None:
            options["previous"] = _on_cpu(old_global_expert_indices)
        phy2log, _, _ = rebalance_experts(_on_cpu(weight), num_replicas, num_groups, num_nodes,
                                          num_ranks, **options)
        return phy2log


def vllm_policy_class():
    """ExflowEplbPolicy as a subclass of vLLM's AbstractEplbPolicy (imports vLLM)."""
    from vllm.distributed.eplb.policy.abstract import AbstractEplbPolicy

    return type("ExflowEplbPolicy", (ExflowEplbPolicy, AbstractEplbPolicy),
                {"__module__": __name__, "__doc__": ExflowEplbPolicy.__doc__})


SGLANG_ALGORITHMS = ("deepseek", "deepseek_hierarchical")


def sglang_rebalance_experts(tokens_per_expert, num_physical_experts, num_local_physical_experts,
                             num_groups, num_nodes, algorithm):
    """SGLang's eplb_algorithms.rebalance_experts: tokens_per_expert [steps, layers, experts]
    (summed over the steps), num_physical_experts slots per layer, num_local_physical_experts
    per GPU, num_groups (None: no groups), num_nodes, algorithm: EplbAlgorithm.deepseek (global)
    or .deepseek_hierarchical (groups kept on nodes), or its name. Returns (phy2log, log2phy,
    logcnt), int64 CPU tensors (NumPy arrays for NumPy input)."""
    name = getattr(algorithm, "name", algorithm)
    if name not in SGLANG_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(SGLANG_ALGORITHMS)}, got "
                         f"{algorithm!r}")
    slots = _index(num_physical_experts, "num_physical_experts")
    per_gpu = _index(num_local_physical_experts, "num_local_physical_experts")
    if per_gpu < 1 or slots % per_gpu:
        raise ValueError(f"num_local_physical_experts ({per_gpu}) must be >= 1 and divide "
                         f"num_physical_experts ({slots})")
    if tokens_per_expert.ndim != 3:
        raise ValueError(f"tokens_per_expert must be [steps, layers, experts], got shape "
                         f"{list(tokens_per_expert.shape)}")
    weight = _on_cpu(tokens_per_expert).sum(0)
    if name == "deepseek":
        num_groups, num_nodes = 1, 1
    elif num_groups is None or _index(num_groups, "num_groups") % _index(num_nodes, "num_nodes"):
        raise ValueError(f"num_groups: deepseek_hierarchical needs expert groups that num_nodes "
                         f"({num_nodes}) divides, got {num_groups}")
    return rebalance_experts(weight, slots, num_groups, num_nodes, slots // per_gpu)


def _on_cpu(x):
    return x.detach().cpu() if _is_torch(x) else x
