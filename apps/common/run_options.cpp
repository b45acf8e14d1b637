#include "run_options.hpp"

namespace exflow::cli {

const OptionTable<RunArgs>& run_options() {
  static const OptionTable<RunArgs> table = [] {
    OptionTable<RunArgs> t;
    t.push_back(option<RunArgs>(&RunArgs::trace, "--trace",
                                "routing trace (.npy, integer [tokens, layers] or [tokens, "
                                "layers, k]); its router choices are replayed")
                    .must()
                    .check(CLI::ExistingFile));
    t.push_back(option<RunArgs>(&RunArgs::mode, "--mode",
                                "baseline: two all-to-alls per layer through each sequence's "
                                "owner (data-parallel attention); exflow: context-coherent, one "
                                "all-to-all per layer plus KV all-gathers; deepep: the baseline's "
                                "owners with DeepEP's node-deduplicated dispatch and combine (one "
                                "inter-node row per token and node, forwarded within it); "
                                "reference: one process without MPI, the ground truth the others "
                                "must match bit for bit")
                    .must()
                    .check(CLI::IsMember({"baseline", "exflow", "deepep", "reference"})));
    t.push_back(option<RunArgs>(&RunArgs::placement, "--placement",
                                "expert placement for the rank count, read and checked as exflow "
                                "eval reads it: the CSV (header Expert,Node; replica rows "
                                "allowed), SGLang's or EPLB's JSON; every rank hosts the same "
                                "number of expert slots per layer")
                    .check(CLI::ExistingFile)
                    .shown_default("vanilla"));
    t.push_back(option<RunArgs>(&RunArgs::gpus_per_node, "--gpus-per-node",
                                "GPUs (ranks) per node P; the rank count must be nodes x P")
                    .check(CLI::Range(1, 1 << 16))
                    .shown_default("the rank count"));
    t.push_back(option<RunArgs>(&RunArgs::nodes, "--nodes", "nodes N")
                    .check(CLI::Range(1, 1 << 16))
                    .shown_default("ranks / gpus-per-node"));
    t.push_back(option<RunArgs>(&RunArgs::experts, "--experts",
                                "experts per layer E (must exceed every id in the trace)")
                    .check(CLI::Range(1, 1 << 16))
                    .shown_default("largest id + 1"));
    t.push_back(option<RunArgs>(&RunArgs::topk, "--topk",
                                "experts per token k: the first k columns of the trace")
                    .check(CLI::Range(1, 1 << 10))
                    .shown_default("the trace's k"));
    t.push_back(option<RunArgs>(&RunArgs::batch, "--batch", "sequences run together")
                    .check(CLI::Range(1, 1 << 20)));
    t.push_back(option<RunArgs>(&RunArgs::seq_len, "--seq-len",
                                "tokens per sequence (consecutive trace tokens)")
                    .check(CLI::Range(1, 1 << 20)));
    t.push_back(option<RunArgs>(&RunArgs::prefill, "--prefill",
                                "positions of every sequence run together in the prefill step; "
                                "the rest run as one decode step per position")
                    .check(CLI::Range(0, 1 << 20))
                    .shown_default("seq-len / 2"));
    t.push_back(option<RunArgs>(&RunArgs::hidden, "--hidden", "hidden size H")
                    .check(CLI::Range(1, 1 << 16)));
    t.push_back(option<RunArgs>(&RunArgs::heads, "--heads", "attention heads (must divide H)")
                    .check(CLI::Range(1, 1 << 16)));
    t.push_back(option<RunArgs>(&RunArgs::ffn, "--ffn", "inner width F of every expert")
                    .check(CLI::Range(1, 1 << 20)));
    t.push_back(option<RunArgs>(&RunArgs::activation, "--activation",
                                "expert FFN: swiglu (W1, W3, W2) or gelu (W1, W2)")
                    .check(CLI::IsMember({"swiglu", "gelu"})));
    t.push_back(option<RunArgs>(&RunArgs::combine, "--combine",
                                "expert output weights: trace (2^-c for column c, normalised) or "
                                "uniform (1/k)")
                    .check(CLI::IsMember({"trace", "uniform"})));
    t.push_back(option<RunArgs>(&RunArgs::seed, "--seed", "seed of the weights and token inputs"));
    t.push_back(option<RunArgs>(&RunArgs::json, "--json", "print one JSON object on stdout"));
    return t;
  }();
  return table;
}

}  // namespace exflow::cli
