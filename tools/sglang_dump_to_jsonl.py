#!/usr/bin/env python3
"""Turn an SGLang per-token expert-distribution dump into exflow's JSONL routing log.

Record with `--expert-distribution-recorder-mode per_token`, then POST
/start_expert_distribution_record, run the workload, POST /stop_expert_distribution_record and
/dump_expert_distribution_record. Each rank writes expert_distribution_recorder_{time}_{rank}.pt
under $SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR: {"records": [{"topk_ids_of_layer": int tensor
[layers, tokens, 8] of PHYSICAL ids, ...}, ...], "last_physical_to_logical_map": [layers,
physical]}. Convert one rank's file (every rank sees the same tokens unless DP attention splits
them):

    python3 tools/sglang_dump_to_jsonl.py dump.pt | exflow convert - -o trace.npy

Physical ids become logical ids through last_physical_to_logical_map (the map in force at the
dump; recording across a rebalance mixes maps). Records without tokens are skipped; tokens are
numbered consecutively across records. SGLang pads with -1: layers that never route (dense
layers) are dropped and the MoE layers renumbered 0..L-1 (the mapping goes to stderr), columns
beyond the model's top-k are dropped, and any other -1 is an error. Needs torch.
"""
import argparse
import sys

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump", help="the .pt file SGLang's recorder wrote (per_token mode)")
    ap.add_argument("-o", "--output", help="JSONL file to write (default: stdout)")
    args = ap.parse_args()

    data = torch.load(args.dump, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or not {"records", "last_physical_to_logical_map"} <= data.keys():
        sys.exit(f"{args.dump}: not a per_token dump "
                 "(needs 'records' and 'last_physical_to_logical_map')")
    p2l = torch.as_tensor(data["last_physical_to_logical_map"]).long()
    records = [r["topk_ids_of_layer"].long() for r in data["records"]
               if r["topk_ids_of_layer"].shape[1] > 0]
    if not records:
        sys.exit(f"{args.dump}: no record holds tokens")
    for i, ids in enumerate(records):
        if ids.dim() != 3 or ids.shape[0] != p2l.shape[0]:
            sys.exit(f"{args.dump}: record {i}: topk_ids_of_layer has shape {tuple(ids.shape)}, "
                     f"expected [{p2l.shape[0]}, tokens, k]")

    # valid[layer, column]: some record routes a token there.
    valid = torch.zeros(records[0].shape[0], records[0].shape[2], dtype=torch.bool)
    for ids in records:
        valid |= (ids >= 0).any(dim=1)
    moe = valid.any(dim=1).nonzero().flatten().tolist()
    if not moe:
        sys.exit(f"{args.dump}: every expert id is -1")
    k = int(valid.any(dim=0).nonzero().max()) + 1
    print(f"{args.dump}: {len(moe)} MoE layers of {p2l.shape[0]}, top-{k}; "
          f"exflow layer i is SGLang layer {moe}[i]", file=sys.stderr)

    out = open(args.output, "w") if args.output else sys.stdout
    token = 0
    for i, ids in enumerate(records):
        ids = ids[moe, :, :k]
        bad = (ids < 0).nonzero()
        if len(bad):
            layer, t, c = bad[0].tolist()
            sys.exit(f"{args.dump}: record {i}: SGLang layer {moe[layer]} token {t} "
                     f"column {c} is -1 inside the top-{k}")
        n = ids.shape[1]
        logical = torch.gather(p2l[moe], 1, ids.reshape(len(moe), -1))
        logical = logical.reshape(len(moe), n, k).tolist()
        for t in range(n):
            for layer in range(len(moe)):
                out.write('{"layer":%d,"topk_ids":[%s],"token":%d}\n'
                          % (layer, ",".join(map(str, logical[layer][t])), token + t))
        token += n
    print(f"{args.dump}: {token} tokens", file=sys.stderr)
    if args.output:
        out.close()


if __name__ == "__main__":
    main()
