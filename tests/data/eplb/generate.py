"""Writes (input, expected output) cases of EPLB's rebalance_experts as JSON.

Usage: python3 generate.py EPLB_DIR OUT.json [--count-per-shape N] [--seed S]
EPLB_DIR holds eplb.py of github.com/deepseek-ai/EPLB, imported from there (needs torch).
Loads are small integers, so that many are tied.
"""
import argparse
import json
import random
import sys

# (layers, experts, num_replicas, num_groups, num_nodes, num_gpus)
SHAPES = [
    (2, 12, 16, 4, 2, 8),       # EPLB's README example: hierarchical
    (2, 12, 16, 3, 2, 8),       # groups do not divide over the nodes: global
    (3, 64, 64, 8, 1, 8),       # no redundant slots
    (3, 64, 72, 8, 1, 8),
    (2, 64, 80, 4, 2, 8),
    (2, 64, 96, 1, 2, 16),      # global
    (1, 256, 288, 8, 9, 72),    # 8 groups on 9 nodes: global
    (1, 256, 288, 8, 8, 72),    # hierarchical
    (1, 256, 320, 8, 8, 64),
    (2, 20, 24, 5, 1, 4),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("eplb_dir")
    ap.add_argument("out")
    ap.add_argument("--count-per-shape", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    sys.path.insert(0, a.eplb_dir)
    import torch
    import eplb

    rng = random.Random(a.seed)
    cases = []
    for shape in SHAPES:
        layers, experts, replicas, groups, nodes, gpus = shape
        for _ in range(a.count_per_shape):
            top = rng.choice([3, 10, 1000])
            weight = [[rng.randint(0, top) for _ in range(experts)] for _ in range(layers)]
            phy2log, log2phy, logcnt = eplb.rebalance_experts(
                torch.tensor(weight), replicas, groups, nodes, gpus)
            cases.append({
                "layers": layers, "experts": experts, "num_replicas": replicas,
                "num_groups": groups, "num_nodes": nodes, "num_gpus": gpus,
                "weight": weight, "phy2log": phy2log.tolist(),
                "log2phy": log2phy.tolist(), "logcnt": logcnt.tolist(),
            })
    with open(a.out, "w") as f:
        json.dump({"cases": cases}, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
