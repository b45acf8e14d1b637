"""DeepSeek-V3-shaped rebalancing through exflow.rebalance_experts (bench/rebalance_benchmarks.sh):
58 layers x 256 experts, top-8, 8 nodes x 8 GPUs, 320 slots per layer (64 redundant), 8 expert
groups. Window 1 and window 2 are synthetic traces of 20 000 tokens with different seeds (the
routing drifts completely). Prints a Markdown table: seconds per call (best of three), DeepEP
inter-node transfers per token of window 2 under each answer (the evaluator's, on every token), and the slots that change.

usage: rebalance_v3.py BUILD_PYTHON_DIR WINDOW1.npy WINDOW2.npy
"""
import sys
import time

import numpy as np

sys.path.insert(0, sys.argv[1])
import exflow  # noqa: E402

LAYERS, EXPERTS, SLOTS, GROUPS, NODES, GPUS = 58, 256, 320, 8, 8, 64
BUDGET = SLOTS * LAYERS // 10


def loads_of(ids):
    return np.stack([np.bincount(ids[:, layer].ravel(), minlength=EXPERTS)
                     for layer in range(LAYERS)]).astype(np.int64)


def coactivation_of(ids):
    """[layers, experts, experts]: tokens routed to both experts, as an engine accumulates it."""
    k = ids.shape[2]
    counts = np.empty((LAYERS, EXPERTS, EXPERTS), dtype=np.int64)
    for layer in range(LAYERS):
        rows = ids[:, layer].astype(np.int64)
        pairs = np.repeat(rows, k, axis=1) * EXPERTS + np.tile(rows, (1, k))
        counts[layer] = np.bincount(pairs.ravel(), minlength=EXPERTS * EXPERTS).reshape(
            EXPERTS, EXPERTS)
    return counts


def timed(call):
    best, out = float("inf"), None
    for _ in range(3):
        start = time.perf_counter()
        out = call()
        best = min(best, time.perf_counter() - start)
    return best, out


def inter(ids, phy2log):
    placement = exflow._native._placement_from_phy2log(phy2log, GPUS // NODES, NODES, EXPERTS)
    return exflow.evaluate(ids, placement, scheme="deepep")["inter"]


def main():
    before, after = np.load(sys.argv[2]), np.load(sys.argv[3])
    weight = loads_of(after)
    counts = coactivation_of(after)
    old = exflow.rebalance_experts(loads_of(before), SLOTS, GROUPS, NODES, GPUS,
                                   routing=before, time_limit=2.0)[0]

    def plan(**kw):
        return exflow.rebalance_experts(weight, SLOTS, GROUPS, NODES, GPUS, **kw)[0]

    rows = [("loads only (EPLB's answer)", {}),
            ("co-activation counts [58, 256, 256], `time_limit=1`",
             {"routing": counts, "time_limit": 1.0}),
            ("top-k ids [20000, 58, 8], `time_limit=1`", {"routing": after, "time_limit": 1.0}),
            (f"top-k ids, `previous`, `max_moves={BUDGET}` (10%), `time_limit=1`",
             {"routing": after, "previous": old, "max_moves": BUDGET, "time_limit": 1.0}),
            (f"top-k ids, `previous`, `max_moves={BUDGET}`, `time_limit=10`",
             {"routing": after, "previous": old, "max_moves": BUDGET, "time_limit": 10.0}),
            (f"co-activation counts, `previous`, `max_moves={BUDGET}`, `time_limit=1`",
             {"routing": counts, "previous": old, "max_moves": BUDGET, "time_limit": 1.0})]
    eplb = None
    print("| call | seconds (best of 3) | slots changed | deepep inter-node transfers per token "
          "| vs EPLB |")
    print("|---|---:|---:|---:|---:|")
    print(f"| the previous placement (planned on window 1) | | 0 | {inter(after, old):.2f} | "
          f"{100 * (inter(after, old) / inter(after, plan()) - 1):+.1f}% |")
    for label, kw in rows:
        seconds, phy2log = timed(lambda: plan(**kw))
        transfers = inter(after, phy2log)
        eplb = transfers if eplb is None else eplb
        print(f"| {label} | {seconds:.3f} | {int((phy2log != old).sum())} | {transfers:.2f} | "
              f"{100 * (transfers / eplb - 1):+.1f}% |")


main()
