// Inputs that used to crash a reader, slip through it or come back as an unreadable message:
// deep JSON nesting, duplicate and unknown keys, stray carriage returns, npy headers numpy
// would refuse, raw or huge excerpts in messages, and top-k rows that name an expert twice.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "exflow/error.hpp"
#include "exflow/formats.hpp"
#include "exflow/placement.hpp"
#include "exflow/trace.hpp"
#include "io/npy_array.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

using test::run_command;
using test::TempDir;
using test::write_bytes;
using test::write_npy;

std::string nested(int depth, const std::string& inner) {
  return std::string(static_cast<std::size_t>(depth), '[') + inner +
         std::string(static_cast<std::size_t>(depth), ']');
}

// Printable ASCII only, one line, at most `limit` bytes.
void expect_short_ascii_line(const std::string& message, std::size_t limit = 400) {
  EXPECT_FALSE(message.empty());
  EXPECT_LE(message.size(), limit) << message.substr(0, 200);
  for (char c : message) {
    const auto u = static_cast<unsigned char>(c);
    ASSERT_TRUE(u >= 0x20 && u < 0x7f) << "byte " << static_cast<int>(u) << " in " << message;
  }
}

// Runs exflow convert on `jsonl` and returns its stderr, expecting exit 1 and one line.
std::string convert_error(const std::string& jsonl) {
  TempDir dir;
  write_bytes(dir.file("log.jsonl"), jsonl);
  test::CommandRun r =
      run_command(EXFLOW_CLI, {"convert", dir.file("log.jsonl"), "-o", dir.file("t.npy")});
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "not one line: " << r.err.substr(0, 300);
  return r.err;
}

TEST(ConvertHardening, DeepNestingInAnyFieldIsOneLineNotACrash) {
  for (const std::string& row :
       {"{\"layer\": 0, \"topk_ids\": " + nested(70000, "1") + "}\n",
        "{\"layer\": " + nested(70000, "0") + ", \"topk_ids\": [1]}\n",
        "{\"layer\": 0, \"topk_ids\": [1], \"token\": " + nested(70000, "0") + "}\n",
        "{\"layer\": 0, \"topk_ids\": [1], \"x\": " + nested(1000000, "") + "}\n"}) {
    const std::string err = convert_error(row);
    EXPECT_NE(err.find("log.jsonl:1: lists and objects nested more than 64 deep"),
              std::string::npos)
        << err;
  }
}

TEST(ConvertHardening, DuplicateKeysAreRefusedByName) {
  const std::string err = convert_error("{\"layer\": 0, \"topk_ids\": [1], \"layer\": 1}\n");
  EXPECT_NE(err.find("log.jsonl:1: duplicate key 'layer'"), std::string::npos) << err;
}

TEST(ConvertHardening, ARowNamingAnExpertTwiceIsRefused) {
  const std::string err = convert_error("{\"layer\": 0, \"topk_ids\": [3, 5, 3]}\n");
  EXPECT_NE(err.find("log.jsonl:1: topk_ids[2] = 3 repeats topk_ids[0]"), std::string::npos) << err;
}

TEST(ConvertHardening, MessagesQuoteShortEscapedExcerptsAndCompactNumbers) {
  std::string err =
      convert_error("{\"layer\": 0, \"topk_ids\": [1" + std::string(1 << 20, 'x') + "\xff]}\n");
  expect_short_ascii_line(err.substr(0, err.size() - 1));
  err = convert_error("{\"layer\": 0, \"topk_ids\": [1, \"\xff\xfe\"]}\n");
  expect_short_ascii_line(err.substr(0, err.size() - 1));
  EXPECT_NE(err.find("\\xff"), std::string::npos) << err;
  err = convert_error("{\"layer\": 1.79e308, \"topk_ids\": [1]}\n");
  EXPECT_NE(err.find("\"layer\" is 1.79e+308,"), std::string::npos) << err;
}

// Runs `command` through /bin/sh and returns the result.
test::CommandRun shell(const std::string& command) {
  return run_command("/bin/sh", {"-c", command});
}

TEST(ConvertHardening, APipeGivesTheSameTraceAndLineNumbersAsAFile) {
  TempDir dir;
  std::string log;
  for (int t = 0; t < 50; ++t) {
    for (int l = 0; l < 3; ++l) {
      log += "{\"layer\": " + std::to_string(l) + ", \"topk_ids\": [" + std::to_string(t % 7) +
             ", " + std::to_string(7 + l) + "]}\n";
      if (t % 9 == 0) log += "\n  \r\n";
    }
  }
  write_bytes(dir.file("log.jsonl"), log);
  const std::string cli = EXFLOW_CLI;
  test::CommandRun r =
      shell(cli + " convert " + dir.file("log.jsonl") + " -o " + dir.file("f.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  r = shell("cat " + dir.file("log.jsonl") + " | " + cli + " convert - -o " + dir.file("p.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::read_bytes(dir.file("f.npy")), test::read_bytes(dir.file("p.npy")));
  // Token 20 of layer 1 given again near the end: both name the same lines.
  write_bytes(dir.file("log.jsonl"), log +
                                         "\n{\"layer\": 0, \"topk_ids\": [1, 2], \"token\": 50}\n" +
                                         "{\"layer\": 1, \"topk_ids\": [1, 2], \"token\": 20}\n" +
                                         "{\"layer\": 2, \"topk_ids\": [1, 2], \"token\": 50}\n");
  r = shell("cat " + dir.file("log.jsonl") + " | " + cli + " convert - -o " + dir.file("p.npy"));
  EXPECT_EQ(r.code, 1);
  const std::string piped = r.err.substr(r.err.find(": layer"));
  EXPECT_EQ(piped, ": layer 1 token 20 appears twice (first on line 80)\n");
  r = shell(cli + " convert " + dir.file("log.jsonl") + " -o " + dir.file("f.npy"));
  EXPECT_EQ(r.err, "exflow: error: " + dir.file("log.jsonl") + ":189" + piped);
}

TEST(ConvertHardening, MemoryStaysNearTheOutputSize) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "resident size is not meaningful under AddressSanitizer";
#endif
  TempDir dir;
  const std::int64_t tokens = 40000, layers = 16, k = 8;
  {
    std::ofstream out(dir.file("log.jsonl"), std::ios::binary);
    std::string row;
    for (std::int64_t t = 0; t < tokens; ++t) {
      for (std::int64_t l = 0; l < layers; ++l) {
        row = "{\"layer\":" + std::to_string(l) + ",\"topk_ids\":[";
        for (std::int64_t c = 0; c < k; ++c) {
          row += std::to_string((t + l + c * 5) % 40) + (c + 1 < k ? "," : "]}\n");
        }
        out << row;
      }
    }
  }
  test::CommandRun r =
      run_command(EXFLOW_CLI, {"convert", dir.file("log.jsonl"), "-o", dir.file("t.npy")});
  ASSERT_EQ(r.code, 0) << r.err;
  // This test process runs alone: its children's peak is the converter's.
  rusage usage{};
  ASSERT_EQ(getrusage(RUSAGE_CHILDREN, &usage), 0);
  const std::int64_t output = tokens * layers * k * 2;
  const std::int64_t peak = static_cast<std::int64_t>(usage.ru_maxrss) * 1024;
  EXPECT_LT(peak, 2 * output + (12 << 20)) << "peak " << peak << " bytes for " << output;
}

TEST(JsonReaders, RefuseDeepNestingDuplicateAndUnknownKeys) {
  TempDir dir;
  const std::string path = dir.file("m.json");
  struct Case {
    std::string text;
    std::string fragment;
  };
  const std::string deep = nested(1000000, "0");
  using Reader = std::function<void()>;
  const std::vector<std::pair<std::string, Reader>> readers = {
      {"eplb", [&] { read_eplb_maps(path, 2); }},
      {"sglang", [&] { read_sglang_expert_location(path, 2); }},
      {"vllm-ascend", [&] { read_vllm_ascend_expert_map(path, 2); }},
      {"loads", [&] { read_expert_loads(path); }},
      {"placement", [&] { read_placement_file(path, 1, 4, 2); }},
  };
  for (const auto& [name, read] : readers) {
    SCOPED_TRACE(name);
    write_bytes(path, "{\"phy2log\": " + deep + "}");
    EXPECT_ERROR(InputError, read(), "m.json: lists and objects nested more than 64 deep");
    write_bytes(path, "{\"phy2log\": [[0, 1, 2, 3]], \"phy2log\": [[0, 1, 2, 3]]}");
    EXPECT_ERROR(InputError, read(), "m.json: duplicate key 'phy2log'");
  }
  const std::vector<Case> unknown = {
      {"{\"phy2log\": [[0, 1, 2, 3]], \"logcount\": [[1, 1, 1, 1]]}",
       "m.json: unknown key 'logcount' (expected \"phy2log\", \"log2phy\" or \"logcnt\")"},
      {"{\"physical_to_logical_map\": [[0, 1, 2, 3]], \"note\": 1}",
       "m.json: unknown key 'note' (expected \"physical_to_logical_map\")"},
      {"{\"moe_layer_count\": 1, \"layer_list\": [{\"device_list\": [{\"device_expert\": [0, 1]},"
       " {\"device_expert\": [2, 3]}]}], \"moe_layers\": 1}",
       "m.json: unknown key 'moe_layers'"},
      {"{\"moe_layer_count\": 1, \"layer_list\": [{\"device_list\": [{\"device_expert\": [0, 1]},"
       " {\"device_expert\": [2, 3]}], \"layerid\": 0}]}",
       "m.json: layer_list[0]: unknown key 'layerid'"},
      {"{\"moe_layer_count\": 1, \"layer_list\": [{\"device_list\": [{\"device_expert\": [0, 1]},"
       " {\"device_expert\": [2, 3], \"deviceid\": 1}]}]}",
       "m.json: layer_list[0].device_list[1]: unknown key 'deviceid'"},
  };
  for (const Case& c : unknown) {
    write_bytes(path, c.text);
    EXPECT_ERROR(InputError, read_placement_file(path, 1, 4, 2), c.fragment);
  }
  // What the writers write still reads back.
  const Placement p(1, 4, 2, {0, 0, 1, 1});
  write_eplb_maps(path, p);
  EXPECT_EQ(read_eplb_maps(path, 2).gpu_of(), p.gpu_of());
  write_vllm_ascend_expert_map(path, p);
  EXPECT_EQ(read_vllm_ascend_expert_map(path, 2).gpu_of(), p.gpu_of());
  write_sglang_expert_location(path, p);
  EXPECT_EQ(read_sglang_expert_location(path, 2).gpu_of(), p.gpu_of());
}

TEST(JsonReaders, ParseErrorsQuoteAShortEscapedExcerpt) {
  TempDir dir;
  const std::string path = dir.file("m.json");
  write_bytes(path, "{\"phy2log\": [[0, 1, \"" + std::string(1 << 20, 'y') + "\xff\"]]}");
  const std::string m = test::error_of<InputError>([&] { read_eplb_maps(path, 2); });
  expect_short_ascii_line(m);
  EXPECT_NE(m.find("not valid JSON"), std::string::npos) << m;
}

TEST(PlacementCsv, CarriageReturnInsideALineIsRefused) {
  TempDir dir;
  const std::string path = dir.file("p.csv");
  write_bytes(path, "Expert,Node\r\n0,0\r\n1,0\r\n2,1\r\n3\r,1\r\n");
  EXPECT_ERROR(InputError, read_placement_csv(path, 1, 4, 2),
               "p.csv:5: a carriage return at column 2 that does not end the line, in '3\\x0d,1'");
  write_bytes(path, "Expert,Node\r\n0,0\r\n1,0\r\n2,1\r\n3,1\r\n");
  EXPECT_EQ(read_placement_csv(path, 1, 4, 2).gpu_of(), (std::vector<int>{0, 0, 1, 1}));
}

TEST(PlacementCsv, NonUtf8AndHugeLinesGiveShortEscapedMessages) {
  TempDir dir;
  const std::string path = dir.file("p.csv");
  write_bytes(path, "Expert,Node\n0,\xff\xfe\n");
  std::string m = test::error_of<InputError>([&] { read_placement_csv(path, 1, 4, 2); });
  expect_short_ascii_line(m);
  EXPECT_NE(m.find("found '0,\\xff\\xfe'"), std::string::npos) << m;
  write_bytes(path, "Expert,Node\n" + std::string(1 << 20, '7') + ",x\n");
  m = test::error_of<InputError>([&] { read_placement_csv(path, 1, 4, 2); });
  expect_short_ascii_line(m, 200);
  write_bytes(path, "\xc3\x28" + std::string(1 << 20, 'h') + "\n");
  m = test::error_of<InputError>([&] { read_placement_csv(path, 1, 4, 2); });
  expect_short_ascii_line(m, 200);
  EXPECT_NE(m.find("found '\\xc3(hhh"), std::string::npos) << m;
}

TEST(PlacementCsv, TheCliPrintsOneShortEscapedLine) {
  TempDir dir;
  const std::string golden = std::string(EXFLOW_TEST_DATA_DIR) + "/golden/mini-2x2.npy";
  for (const std::string& bad : {std::string("Expert,Node\n0,\xff\xfe\x1b[31m\n"),
                                 "Expert,Node\n" + std::string(1 << 20, '1') + ",0\xff\n"}) {
    write_bytes(dir.file("p.csv"), bad);
    const test::CommandRun r = run_command(
        EXFLOW_CLI, {"eval", golden, dir.file("p.csv"), "--gpus-per-node", "2", "--nodes", "2"});
    EXPECT_EQ(r.code, 1);
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1);
    expect_short_ascii_line(r.err.substr(0, r.err.size() - 1), 300);
  }
}

// An .npy file whose header dictionary is `dict` over int16 data of shape (2, 2).
std::string npy_with_header(const std::string& dict) {
  std::string header = dict;
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((unpadded + 63) / 64 * 64 - unpadded, ' ');
  header += '\n';
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + std::string(8, '\0');
}

TEST(NpyHeader, RefusesWhatNumpyRefuses) {
  TempDir dir;
  const std::string path = dir.file("t.npy");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{'descr': '<i2', 'fortran_order': False, 'shape': (2, 2), 'extra': 1, }",
       "malformed npy header: unknown key 'extra'"},
      {"{'descr': '<i2', 'fortran_order': False, 'shape': (02, 2), }",
       "malformed npy header: integer with a leading zero at offset"},
      {"{'descr': '<i2', 'fortran_order': False, 'shape': (2, 2), 'shape': (2, 2), }",
       "malformed npy header: key 'shape' given twice"},
      {"{'descr': '<i2', 'fortran_order': False, 'shape': (2, 2), '\xff': 0}",
       "unknown key '\\xff'"},
  };
  for (const auto& [dict, fragment] : cases) {
    SCOPED_TRACE(dict);
    write_bytes(path, npy_with_header(dict));
    EXPECT_ERROR(InputError, Trace::open(path), fragment);
    EXPECT_ERROR(InputError, io::read_int_npy(path), fragment);
  }
  write_bytes(path,
              npy_with_header("{'descr': '<i2', 'fortran_order': False, 'shape': (0200,), }"));
  EXPECT_ERROR(InputError, io::read_int_npy(path), "integer with a leading zero");
  write_bytes(path, npy_with_header("{'descr': '<i2', 'fortran_order': False, 'shape': (2, 2), }"));
  EXPECT_EQ(Trace::open(path).tokens(), 2);
}

TEST(TraceValidation, ARowNamingAnExpertTwiceIsRefused) {
  TempDir dir;
  const std::string path = dir.file("t.npy");
  // k = 16 > E = 8: some row repeats an expert. Token 1, layer 1 repeats expert 4 first.
  std::vector<std::int64_t> ids;
  for (int t = 0; t < 3; ++t) {
    for (int l = 0; l < 2; ++l) {
      for (int c = 0; c < 16; ++c) ids.push_back(t == 0 || l == 0 ? c : (c < 8 ? c : c - 4));
    }
  }
  write_npy(path, ids, {3, 2, 16}, "<i2");
  EXPECT_ERROR(InputError, Trace::open(path),
               "t.npy: token 1, layer 1 names expert 4 twice (columns 4 and 8)");
  // Only the first k columns count.
  TraceOpenOptions top8;
  top8.topk = 8;
  EXPECT_EQ(Trace::open(path, top8).k(), 8);
  // Every thread count finds the same first repeat, also far into a big trace.
  std::vector<std::int32_t> big;
  const std::int64_t tokens = 50000;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < 3; ++l) {
      for (int c = 0; c < 4; ++c) big.push_back((c + l + static_cast<int>(t)) % 8);
    }
  }
  big[static_cast<std::size_t>((40000 * 3 + 2) * 4 + 3)] = big[(40000 * 3 + 2) * 4 + 1];
  big[static_cast<std::size_t>((45000 * 3 + 0) * 4 + 2)] = big[(45000 * 3 + 0) * 4 + 0];
  for (int threads : {1, 3}) {
    Trace::Buffer b;
    b.data = big.data();
    b.tokens = tokens;
    b.layers = 3;
    b.k = 4;
    b.item_size = 4;
    b.source = "big";
    TraceOpenOptions o;
    o.threads = threads;
    EXPECT_ERROR(InputError, Trace::from_buffer(b, o),
                 "big: token 40000, layer 2 names expert 3 twice (columns 1 and 3)");
  }
}

TEST(TraceFile, TruncatedWhileInUseIsAnIoErrorNotASigbus) {
  TempDir dir;
  const std::string path = dir.file("t.npy");
  const std::int64_t tokens = 20000;
  std::vector<std::int64_t> ids;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < 4; ++l) {
      for (int c = 0; c < 2; ++c) ids.push_back((t + l + 4 * c) % 8);
    }
  }
  for (bool fortran : {false, true}) {
    SCOPED_TRACE(fortran ? "Fortran order" : "C order");
    write_npy(path, ids, {tokens, 4, 2}, "<i2", fortran);
    const Trace trace = Trace::open(path);
    std::filesystem::resize_file(path, 4096);
    EXPECT_ERROR(IoError, trace.for_each_block(2, [](int, const TraceBlock&) {}),
                 "t.npy: the file ends at byte 4096");
    EXPECT_ERROR(IoError, trace.at(tokens - 1, 3, 1), "truncated while in use");
  }
}

TEST(ReportOptions, HeatmapExpertsAcceptsAllAsDocumented) {
  TempDir dir;
  std::vector<std::int64_t> ids;
  for (int t = 0; t < 256; ++t) {
    for (int l = 0; l < 2; ++l) {
      for (int c = 0; c < 2; ++c) ids.push_back((t * 3 + l + c * 4) % 8);
    }
  }
  write_npy(dir.file("t.npy"), ids, {256, 2, 2}, "<i2");
  const std::vector<std::string> args = {"report",  dir.file("t.npy"),  "--gpus-per-node",      "2",
                                         "-o",      dir.file("r.html"), "--convergence-points", "0",
                                         "--quiet", "--heatmap-experts"};
  std::vector<std::string> all = args;
  all.push_back("all");
  test::CommandRun r = run_command(EXFLOW_CLI, all);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(test::read_bytes(dir.file("r.html")).find("All experts, in id order."),
            std::string::npos);
  std::vector<std::string> one = args;
  one.push_back("1");
  r = run_command(EXFLOW_CLI, one);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--heatmap-experts"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace exflow
