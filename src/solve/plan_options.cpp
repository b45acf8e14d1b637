// The options table of exflow::plan (include/exflow/plan.hpp): one row per PlanOptions field a
// user sets, with the one help text, default and check that the CLI, Python and docs/cli.md
// share.
#include <charconv>
#include <cmath>
#include <limits>
#include <string>

#include "core/quoted.hpp"
#include "exflow/error.hpp"
#include "exflow/plan.hpp"

namespace exflow {
namespace {

[[noreturn]] void refuse(const std::string& name, const std::string& what, std::string_view text) {
  throw UsageError(name + " must be " + what + ", got " + quoted(text), {name});
}

template <class Int>
Int parse_integer(const std::string& name, std::string_view text, Int lo, Int hi) {
  Int v{};
  const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  const std::string range =
      "an integer from " + std::to_string(lo) +
      (hi == std::numeric_limits<Int>::max() ? std::string(" up") : " to " + std::to_string(hi));
  if (text.empty() || r.ec != std::errc() || r.ptr != text.data() + text.size() || v < lo ||
      v > hi) {
    refuse(name, range, text);
  }
  return v;
}

// The longest time limit: about 31 years, far inside what the clocks' nanosecond counts hold.
constexpr double kMaxSeconds = 1e9;

double parse_seconds(const std::string& name, std::string_view text) {
  double v = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || r.ec != std::errc() || r.ptr != text.data() + text.size() ||
      !std::isfinite(v) || v < 0) {
    refuse(name, "a finite number of seconds >= 0", text);
  }
  if (v > kMaxSeconds) refuse(name, "at most 1e9 seconds", text);
  return v;
}

bool parse_bool(const std::string& name, std::string_view text) {
  if (text == "true" || text == "1") return true;
  if (text == "false" || text == "0") return false;
  refuse(name, "true or false", text);
}

std::string number_text(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// A row for `field` of type T: `parse(name, text)` reads a value, `print(value)` writes one.
template <class T, class Parse, class Print>
PlanOptionSpec field_row(const char* name, OptionType type, T PlanOptions::*field, Parse parse,
                         Print print, std::string help, std::string shown_default = {}) {
  PlanOptionSpec s;
  s.name = name;
  s.type = type;
  s.help = std::move(help);
  s.shown_default = std::move(shown_default);
  s.set = [n = std::string(name), field, parse](PlanOptions& o, std::string_view t) {
    o.*field = parse(n, t);
  };
  s.value = [field, print](const PlanOptions& o) { return print(o.*field); };
  return s;
}

template <class Int>
PlanOptionSpec integer_row(const char* name, Int PlanOptions::*field, Int lo, Int hi,
                           std::string help, std::string shown_default = {}) {
  return field_row(
      name, OptionType::kInt, field,
      [lo, hi](const std::string& n, std::string_view t) {
        return parse_integer<Int>(n, t, lo, hi);
      },
      [](Int v) { return std::to_string(v); }, std::move(help), std::move(shown_default));
}

PlanOptionSpec seconds_row(const char* name, double PlanOptions::*field, std::string help) {
  return field_row(name, OptionType::kFloat, field, parse_seconds, number_text, std::move(help));
}

PlanOptionSpec flag_row(const char* name, bool PlanOptions::*field, std::string help) {
  return field_row(
      name, OptionType::kBool, field, parse_bool,
      [](bool v) { return std::string(v ? "true" : "false"); }, std::move(help));
}

std::vector<PlanOptionSpec> make_specs() {
  constexpr auto kMax64 = std::numeric_limits<std::int64_t>::max();
  std::vector<PlanOptionSpec> t;
  {
    PlanOptionSpec s;
    s.name = "method";
    s.type = OptionType::kText;
    s.help =
        "auto (exact where it is estimated to take at most 1 s, else fast), exact (proven "
        "optimum), ilp (COIN-OR CBC), "
        "fast (local search), bcd (block descent baseline), vanilla (contiguous), eplb "
        "(DeepSeek's EPLB by expert loads alone, no search)";
    s.set = [](PlanOptions& o, std::string_view text) {
      for (Method m : {Method::kAuto, Method::kExact, Method::kIlp, Method::kFast, Method::kBcd,
                       Method::kVanilla, Method::kEplb}) {
        if (text == to_string(m)) {
          o.method = m;
          return;
        }
      }
      refuse("method", "one of auto, exact, ilp, fast, bcd, vanilla, eplb", text);
    };
    s.value = [](const PlanOptions& o) { return std::string(to_string(o.method)); };
    t.push_back(std::move(s));
  }
  {
    PlanOptionSpec s;
    s.name = "max_load_ratio";
    s.type = OptionType::kWordOrNumber;
    s.help =
        "per-layer limit on the busiest GPU's token load over the mean: auto (never worse than "
        "vanilla on that layer), none, or a number >= 1";
    s.set = [](PlanOptions& o, std::string_view text) {
      o.max_load_ratio = parse_load_limit(std::string(text));
    };
    s.value = [](const PlanOptions& o) { return to_string(o.max_load_ratio); };
    t.push_back(std::move(s));
  }
  t.push_back(integer_row("redundant", &PlanOptions::redundant, 0, 1 << 16,
                          "spare expert slots per GPU per layer, filled with replicas of the "
                          "experts tokens ask for (tokens use the nearest copy)"));
  t.push_back(integer_row("redundant_total", &PlanOptions::redundant_total, 0, 1 << 30,
                          "spare expert slots per layer in all (SGLang's "
                          "--ep-num-redundant-experts, vLLM's num_redundant_experts): experts + "
                          "this must divide by the GPU count, the experts alone need not; not "
                          "with --redundant"));
  t.push_back(seconds_row("time_limit", &PlanOptions::time_limit,
                          "seconds the graph solver may use (0: fast and bcd run their fixed "
                          "budget, ilp 60 s)"));
  t.push_back(seconds_row("token_time_limit", &PlanOptions::token_time_limit,
                          "seconds for the token-level search that handles top-k, load limits "
                          "and replicas (0: until it converges)"));
  t.push_back(integer_row<std::int64_t>(
      "sample_tokens", &PlanOptions::sample_tokens, 0, kMax64,
      "tokens the token-level search holds, evenly spaced over the trace", "all, up to 16M ids"));
  t.push_back(integer_row<std::uint64_t>("seed", &PlanOptions::seed, 0,
                                         std::numeric_limits<std::uint64_t>::max(),
                                         "seed of fast and bcd (deterministic)"));
  t.push_back(integer_row("starts", &PlanOptions::starts, 1, 4096,
                          "independent starts of fast and bcd",
                          "8; 2 for top-k traces, which the token search refines, and for "
                          "graphs with E^2 G L over 1e8 (DeepSeek-V3 on 64 GPUs)"));
  t.push_back(integer_row("min_experts_per_gpu", &PlanOptions::min_experts_per_gpu, 0, 1 << 16,
                          "relaxed balance: at least M experts of every layer per GPU (the "
                          "original tool's hard_limit)",
                          "E/G exactly"));
  t.push_back(integer_row<std::int64_t>("incremental", &PlanOptions::incremental, 0, kMax64,
                                        "solve on the first N tokens, add N more from the "
                                        "previous answer, until the placement is steady",
                                        "off"));
  t.push_back(
      flag_row("bipart", &PlanOptions::bipart,
               "recursive partitioning of the GPU set by the smallest prime factor (nodes first)"));
  t.push_back(integer_row("expert_groups", &PlanOptions::expert_groups, 0, 1 << 16,
                          "method eplb: groups of consecutive experts (DeepSeek-V3: 8) that "
                          "EPLB keeps on one node when the nodes divide the groups; must "
                          "divide the experts (0: no groups, EPLB's global policy)",
                          "0 (no groups)"));
  t.push_back(integer_row<std::int64_t>(
      "seq_len", &PlanOptions::seq_len, 1, std::int64_t{1} << 40,
      "baseline owners: sequences of this many consecutive trace tokens dealt round-robin to the "
      "GPUs, as data-parallel attention keeps a sequence on one GPU (1: tokens dealt "
      "round-robin)"));
  t.push_back(integer_row<std::int64_t>(
      "max_moves", &PlanOptions::max_moves, -1, kMax64,
      "rebalancing from --previous: the most expert slots that may change (each a copy an "
      "engine must load); every other copy stays on its GPU (-1: no limit)",
      "no limit"));
  {
    PlanOptionSpec s;
    s.name = "scheme";
    s.type = OptionType::kText;
    s.help =
        "the engine's communication scheme the search optimises: coherent (the seed's "
        "context-coherent scheme), standard (two all-to-alls from the owner), deepep (DeepEP "
        "normal mode: one RDMA transfer per remote node, forwarded within it), deepep-ll (DeepEP "
        "low-latency mode: one transfer per token-expert)";
    s.shown_default = "coherent";
    s.set = [](PlanOptions& o, std::string_view text) {
      try {
        o.scheme = parse_scheme(std::string(text));
      } catch (const UsageError&) {
        refuse("scheme", "one of coherent, standard, deepep, deepep-ll", text);
      }
    };
    s.value = [](const PlanOptions& o) {
      return std::string(o.scheme == Scheme::kContextCoherent ? "coherent"
                         : o.scheme == Scheme::kBaseline      ? "standard"
                                                              : to_string(o.scheme));
    };
    t.push_back(std::move(s));
  }
  {
    PlanOptionSpec s;
    s.name = "replica_choice";
    s.type = OptionType::kText;
    s.help =
        "which copy of a replicated expert a token uses: nearest (the owner's, else the nearest) "
        "or even (standard schemes: the owner's, else spread evenly over the copies, as SGLang's "
        "static dispatch)";
    s.set = [](PlanOptions& o, std::string_view text) {
      try {
        o.replica_choice = parse_replica_choice(std::string(text));
      } catch (const UsageError&) {
        refuse("replica_choice", "nearest or even", text);
      }
    };
    s.value = [](const PlanOptions& o) { return std::string(to_string(o.replica_choice)); };
    t.push_back(std::move(s));
  }
  return t;
}

}  // namespace

const std::vector<PlanOptionSpec>& plan_option_specs() {
  static const std::vector<PlanOptionSpec> specs = make_specs();
  return specs;
}

const PlanOptionSpec& plan_option_spec(std::string_view name) {
  std::string names;
  for (const PlanOptionSpec& s : plan_option_specs()) {
    if (s.name == name) return s;
    names += (names.empty() ? "" : ", ") + s.name;
  }
  throw UsageError("unknown option " + quoted(name) + " (options: " + names + ")");
}

void check_plan_options(const PlanOptions& options) {
  static const PlanOptions defaults;
  for (const PlanOptionSpec& s : plan_option_specs()) {
    const std::string value = s.value(options);
    if (value == s.value(defaults)) continue;
    PlanOptions scratch;
    s.set(scratch, value);
  }
  if (options.threads < 0 || options.threads > kMaxThreads) {
    throw UsageError("threads must be an integer from 0 to " + std::to_string(kMaxThreads) +
                         ", got " + std::to_string(options.threads),
                     {"threads"});
  }
}

std::string option_flag(std::string_view name) {
  std::string flag = "--";
  for (char c : name) flag += c == '_' ? '-' : c;
  return flag;
}

}  // namespace exflow
