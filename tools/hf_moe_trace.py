#!/usr/bin/env python3
"""Record the top-k expert ids of a Hugging Face MoE model into an exflow trace, with forward hooks.

    python3 tools/hf_moe_trace.py allenai/OLMoE-1B-7B-0924 prompts.txt -o trace.npy [--solve 8]

Works with the transformers MoE blocks that route through a `gate` linear layer returning router
logits [tokens, experts]: Mixtral, Qwen2-MoE/Qwen3-MoE and OLMoE (classes named *SparseMoeBlock).
A forward hook on each block's gate takes the top-k of the logits (the order softmax keeps, so
column 0 is the router's first choice) for every token of the batch; the layers are stacked in
model order into an int16 array [tokens, layers, k]. With --solve G, the exflow Python module
(build/python on PYTHONPATH) solves a placement for G GPUs on one node and writes its CSV and
SGLang JSON beside the trace. Needs torch and transformers; not run by the tests.
"""
import argparse
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


class Recorder:
    """Forward hooks on every MoE gate; ids[layer] collects [tokens, k] per forward."""

    def __init__(self, model, k):
        self.k = k
        self.ids = []
        self.handles = []
        blocks = [m for m in model.modules() if type(m).__name__.endswith("SparseMoeBlock")]
        if not blocks:
            sys.exit("no *SparseMoeBlock modules with a gate found in this model")
        for layer, block in enumerate(blocks):
            self.ids.append([])
            self.handles.append(block.gate.register_forward_hook(self.hook(layer)))

    def hook(self, layer):
        def record(_module, _inputs, logits):
            top = torch.topk(logits.float(), self.k, dim=-1).indices  # [tokens, k]
            self.ids[layer].append(top.to("cpu", torch.int16))
        return record

    def trace(self):
        for h in self.handles:
            h.remove()
        layers = [torch.cat(chunks) for chunks in self.ids]  # each [tokens, k]
        return torch.stack(layers, dim=1).numpy()  # [tokens, layers, k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="Hugging Face model id or local path")
    ap.add_argument("prompts", help="text file, one prompt per line")
    ap.add_argument("-o", "--output", required=True, help="trace .npy to write")
    ap.add_argument("--max-tokens", type=int, default=512, help="tokens per prompt (truncated)")
    ap.add_argument("--solve", type=int, metavar="G", help="also solve a placement for G GPUs")
    args = ap.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype="auto", device_map="auto")
    k = model.config.num_experts_per_tok
    recorder = Recorder(model, k)
    with torch.no_grad():
        for line in open(args.prompts, encoding="utf-8"):
            if not line.strip():
                continue
            batch = tokenizer(line.strip(), return_tensors="pt", truncation=True,
                              max_length=args.max_tokens).to(model.device)
            model(**batch)
    ids = recorder.trace()
    np.save(args.output, ids)
    print(f"wrote {args.output}: {ids.shape[0]} tokens x {ids.shape[1]} layers x top-{ids.shape[2]}",
          file=sys.stderr)

    if args.solve:
        import exflow

        placement = exflow.solve(ids, gpus_per_node=args.solve)
        stem = args.output[:-4] if args.output.endswith(".npy") else args.output
        placement.to_csv(stem + f".placement-{args.solve}.csv")
        placement.to_sglang(stem + f".expert-location-{args.solve}.json")
        m = placement.metrics
        print(f"placement for {args.solve} GPUs: cost {m['cost']:.3f} vs vanilla "
              f"{m['vanilla']['cost']:.3f} transfers per token", file=sys.stderr)


if __name__ == "__main__":
    main()
