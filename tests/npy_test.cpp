// Tests for the .npy trace reader (exflow::Trace::open): round trips over every integer dtype,
// byte order, memory order, npy format version and rank; the experts and top-k options;
// Trace::prefix and block iteration; and the rejection of each malformed input in
// tests/data/npy/ (written by make_fixtures.py) with an error that names the file and the defect.

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "exflow/error.hpp"
#include "exflow/trace.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

using test::TempDir;
using test::write_npy;

std::string Fixture(const std::string& name) {
  return std::string(EXFLOW_TEST_DATA_DIR) + "/npy/" + name;
}

// Deterministic ids in [0, max_id] that include both 0 and max_id.
std::vector<std::int64_t> MakeIds(std::int64_t count, std::int64_t max_id) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) ids[i] = (i * 2654435761LL + 12345) % (max_id + 1);
  ids[0] = max_id;
  ids[count / 2] = 0;
  return ids;
}

// The ids of make_fixtures.py's value(): the contents of the valid_*.npy fixtures.
std::vector<std::int64_t> FixtureIds(std::int64_t tokens, int layers, int k) {
  std::vector<std::int64_t> ids;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < layers; ++l) {
      for (int c = 0; c < k; ++c) ids.push_back((t * 5 + l * 3 + c * 11) % 13);
    }
  }
  return ids;
}

// Checks every id the trace exposes against `expected`, the C-order values of a
// [trace.tokens(), trace.layers(), stored_k] array (stored_k > trace.k() under a top-k option),
// through Trace::at, Trace::decode and Trace::for_each_block.
void ExpectIds(const Trace& trace, const std::vector<std::int64_t>& expected, int stored_k) {
  auto want = [&](std::int64_t t, int l, int c) {
    return expected[static_cast<std::size_t>((t * trace.layers() + l) * stored_k + c)];
  };
  std::int64_t at_mismatches = 0;
  for (std::int64_t t = 0; t < trace.tokens(); ++t) {
    for (int l = 0; l < trace.layers(); ++l) {
      for (int c = 0; c < trace.k(); ++c) {
        if (trace.at(t, l, c) != want(t, l, c) && at_mismatches++ == 0) {
          ADD_FAILURE() << "at(" << t << ", " << l << ", " << c << ") = " << trace.at(t, l, c)
                        << ", expected " << want(t, l, c);
        }
      }
    }
  }
  EXPECT_EQ(at_mismatches, 0);

  auto check_block = [&](const TraceBlock& block) {
    EXPECT_EQ(block.layers, trace.layers());
    EXPECT_EQ(block.k, trace.k());
    std::int64_t mismatches = 0;
    for (int l = 0; l < block.layers; ++l) {
      for (int c = 0; c < block.k; ++c) {
        const std::int32_t* column = block.column(l, c);
        for (std::int64_t i = 0; i < block.tokens; ++i) {
          std::int64_t t = block.first_token + i;
          if (column[i] != want(t, l, c) && mismatches++ == 0) {
            ADD_FAILURE() << "block id of token " << t << ", layer " << l << ", column " << c
                          << " = " << column[i] << ", expected " << want(t, l, c);
          }
        }
      }
    }
    EXPECT_EQ(mismatches, 0);
  };

  std::vector<std::int32_t> buffer;
  TraceBlock whole = trace.decode(0, trace.tokens(), buffer);
  EXPECT_EQ(whole.first_token, 0);
  EXPECT_EQ(whole.tokens, trace.tokens());
  check_block(whole);

  std::int64_t visited = 0;
  trace.for_each_block(1, [&](int worker, const TraceBlock& block) {
    EXPECT_EQ(worker, 0);
    EXPECT_EQ(block.first_token, visited);
    visited += block.tokens;
    check_block(block);
  });
  EXPECT_EQ(visited, trace.tokens());
}

// Opens `path` and expects an error of type E whose message contains the path and every phrase.
template <typename E>
::testing::AssertionResult OpenFails(const std::string& path, const TraceOpenOptions& options,
                                     std::initializer_list<std::string> phrases) {
  try {
    Trace::open(path, options);
  } catch (const E& e) {
    std::string message = e.what();
    if (message.find(path) == std::string::npos) {
      return ::testing::AssertionFailure() << "message does not name " << path << ": " << message;
    }
    for (const std::string& phrase : phrases) {
      if (message.find(phrase) == std::string::npos) {
        return ::testing::AssertionFailure() << "message lacks \"" << phrase << "\": " << message;
      }
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "wrong exception type: " << e.what();
  }
  return ::testing::AssertionFailure() << "Trace::open(" << path << ") did not throw";
}

// ---------------------------------------------------------------------------------------------
// Round trips over dtype x byte order x memory order x format version x rank.

struct RoundTripParam {
  std::string descr;
  bool fortran;
  int version;
  int rank;
};

std::int64_t MaxIdFor(const std::string& descr) {
  std::string type = descr.substr(1);
  if (type == "i1") return 127;
  if (type == "u1") return 255;
  if (type == "i2") return 32767;
  return 65535;  // the largest id a trace may hold
}

class RoundTripTest : public ::testing::TestWithParam<RoundTripParam> {};

TEST_P(RoundTripTest, ReadsShapeExpertsAndEveryId) {
  const RoundTripParam& p = GetParam();
  const std::int64_t tokens = 131;  // several 64-token decode tiles, the last one partial
  const int layers = 5;
  const int k = p.rank == 3 ? 3 : 1;
  std::vector<std::int64_t> shape = {tokens, layers};
  if (p.rank == 3) shape.push_back(k);
  const std::int64_t max_id = MaxIdFor(p.descr);
  std::vector<std::int64_t> ids = MakeIds(tokens * layers * k, max_id);

  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, ids, shape, p.descr, p.fortran, p.version);
  Trace trace = Trace::open(path);

  EXPECT_EQ(trace.tokens(), tokens);
  EXPECT_EQ(trace.layers(), layers);
  EXPECT_EQ(trace.k(), k);
  EXPECT_EQ(trace.experts(), max_id + 1);
  EXPECT_EQ(trace.source(), path);
  ExpectIds(trace, ids, k);
}

std::vector<RoundTripParam> RoundTripParams() {
  std::vector<RoundTripParam> params;
  for (const char* descr : {"|i1", "|u1", "<i2", ">i2", "<u2", ">u2", "<i4", ">i4", "<u4", ">u4",
                            "<i8", ">i8", "<u8", ">u8"}) {
    for (bool fortran : {false, true}) {
      for (int version : {1, 2, 3}) {
        for (int rank : {2, 3}) params.push_back({descr, fortran, version, rank});
      }
    }
  }
  return params;
}

std::string RoundTripName(const ::testing::TestParamInfo<RoundTripParam>& info) {
  const RoundTripParam& p = info.param;
  std::string order = p.descr[0] == '<' ? "le_" : p.descr[0] == '>' ? "be_" : "";
  return order + p.descr.substr(1) + (p.fortran ? "_F" : "_C") + "_v" + std::to_string(p.version) +
         "_" + std::to_string(p.rank) + "d";
}

INSTANTIATE_TEST_SUITE_P(AllLayouts, RoundTripTest, ::testing::ValuesIn(RoundTripParams()),
                         RoundTripName);

// 16-bit C-order rows are transposed 8 tokens x 8 columns at a time: shapes whose columns and
// tokens leave partial tiles at every edge, signed and unsigned ids up to the dtype's largest,
// every column and under a top-k option (a subset of each row's columns).
TEST(NpyDecodeTest, SixteenBitRowsDecodeAcrossPartialTiles) {
  struct Shape {
    std::int64_t tokens;
    int layers;
    int k;
  };
  TempDir dir;
  for (const char* descr : {"<i2", "<u2"}) {
    for (const Shape s : {Shape{77, 13, 1}, Shape{70, 3, 3}, Shape{131, 6, 4}, Shape{2100, 8, 1}}) {
      SCOPED_TRACE(std::string(descr) + " " + std::to_string(s.tokens) + " x " +
                   std::to_string(s.layers) + " x " + std::to_string(s.k));
      std::vector<std::int64_t> shape = {s.tokens, s.layers};
      if (s.k > 1) shape.push_back(s.k);
      const std::vector<std::int64_t> ids = MakeIds(s.tokens * s.layers * s.k, MaxIdFor(descr));
      const std::string path = dir.file("trace.npy");
      write_npy(path, ids, shape, descr);
      ExpectIds(Trace::open(path), ids, s.k);
      if (s.k > 1) {
        TraceOpenOptions options;
        options.topk = s.k - 1;
        ExpectIds(Trace::open(path, options), ids, s.k);
      }
    }
  }
}

TEST(NpyDecodeTest, NegativeSixteenBitIdInsideATileIsNegative) {
  std::vector<std::int64_t> ids = MakeIds(16 * 16, 9);
  ids[9 * 16 + 10] = -5;  // token 9, layer 10: second tile of tokens, second of columns
  TempDir dir;
  const std::string path = dir.file("trace.npy");
  write_npy(path, ids, {16, 16}, "<i2");
  EXPECT_TRUE(OpenFails<InputError>(path, {}, {"expert id -5 at token 9, layer 10 is negative"}));
}

TEST(NpyRoundTripTest, AcceptsExplicitAndNativeByteOrderMarks) {
  TempDir dir;
  std::vector<std::int64_t> ids = MakeIds(12, 100);
  for (const char* descr : {"<u1", ">i1", "=i4", "|i2"}) {
    SCOPED_TRACE(descr);
    std::string path = dir.file("trace.npy");
    write_npy(path, ids, {4, 3}, descr);
    Trace trace = Trace::open(path);
    EXPECT_EQ(trace.experts(), 101);
    ExpectIds(trace, ids, 1);
  }
}

TEST(NpyRoundTripTest, ReadsCheckedInValidFixtures) {
  Trace c_order = Trace::open(Fixture("valid_i4.npy"));
  EXPECT_EQ(c_order.tokens(), 4);
  EXPECT_EQ(c_order.layers(), 3);
  EXPECT_EQ(c_order.k(), 1);
  EXPECT_EQ(c_order.experts(), 12);
  ExpectIds(c_order, FixtureIds(4, 3, 1), 1);

  Trace fortran = Trace::open(Fixture("valid_u2_be_fortran_v2.npy"));
  EXPECT_EQ(fortran.tokens(), 5);
  EXPECT_EQ(fortran.layers(), 3);
  EXPECT_EQ(fortran.k(), 2);
  EXPECT_EQ(fortran.experts(), 12);  // value() never reaches 12 in a 5 x 3 x 2 array
  ExpectIds(fortran, FixtureIds(5, 3, 2), 2);
}

// ---------------------------------------------------------------------------------------------
// The experts and top-k options.

TEST(NpyOptionsTest, InfersExpertsAsLargestIdPlusOne) {
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, {0, 1, 2, 6, 3, 0}, {3, 2}, "<i2");
  EXPECT_EQ(Trace::open(path).experts(), 7);
}

TEST(NpyOptionsTest, AcceptsExpertsOptionAtOrAboveLargestIdPlusOne) {
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, {0, 1, 2, 6, 3, 0}, {3, 2}, "<i2");
  TraceOpenOptions options;
  options.experts = 7;
  EXPECT_EQ(Trace::open(path, options).experts(), 7);
  options.experts = 64;
  Trace trace = Trace::open(path, options);
  EXPECT_EQ(trace.experts(), 64);
  ExpectIds(trace, {0, 1, 2, 6, 3, 0}, 1);
}

TEST(NpyOptionsTest, RejectsExpertsOptionOutsideSupportedRange) {
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, {0, 1, 2, 3}, {2, 2});
  for (int experts : {0, -4, 65537}) {
    TraceOpenOptions options;
    options.experts = experts;
    EXPECT_TRUE(OpenFails<UsageError>(path, options,
                                      {"experts = " + std::to_string(experts), "out of range"}));
  }
}

TEST(NpyOptionsTest, TopkRestrictsKAndDecodesFirstColumns) {
  const std::int64_t tokens = 150;
  const int layers = 4;
  const int k = 4;
  std::vector<std::int64_t> ids = MakeIds(tokens * layers * k, 40);
  TempDir dir;
  for (bool fortran : {false, true}) {
    SCOPED_TRACE(fortran ? "Fortran order" : "C order");
    std::string path = dir.file("trace.npy");
    write_npy(path, ids, {tokens, layers, k}, ">u4", fortran);
    for (int topk : {1, 2, 4}) {
      SCOPED_TRACE("topk " + std::to_string(topk));
      TraceOpenOptions options;
      options.topk = topk;
      Trace trace = Trace::open(path, options);
      EXPECT_EQ(trace.tokens(), tokens);
      EXPECT_EQ(trace.layers(), layers);
      EXPECT_EQ(trace.k(), topk);
      EXPECT_EQ(trace.experts(), 41);  // ids[0] == 40 is in column 0
      ExpectIds(trace, ids, k);
    }
  }
}

TEST(NpyOptionsTest, TopkOfOneOnTopOneTraceIsAccepted) {
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, {0, 1, 2, 3}, {2, 2});
  TraceOpenOptions options;
  options.topk = 1;
  EXPECT_EQ(Trace::open(path, options).k(), 1);
}

TEST(NpyOptionsTest, RejectsTopkOutsideOneToKAsUsageError) {
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, MakeIds(2 * 3 * 2, 5), {2, 3, 2});
  TraceOpenOptions options;
  options.topk = 3;
  EXPECT_TRUE(OpenFails<UsageError>(path, options, {"top-k 3 requested", "k = 2"}));
  options.topk = 0;
  EXPECT_TRUE(OpenFails<UsageError>(path, options, {"top-k 0 requested", "k = 2"}));

  std::string top1 = dir.file("top1.npy");
  write_npy(top1, {0, 1, 2, 3}, {2, 2});
  options.topk = 2;
  EXPECT_TRUE(OpenFails<UsageError>(top1, options, {"top-k 2 requested", "k = 1"}));
}

// ---------------------------------------------------------------------------------------------
// Prefixes, element access and block iteration.

TEST(NpyTraceTest, PrefixKeepsFirstTokensAndMetadata) {
  const std::int64_t tokens = 37;
  std::vector<std::int64_t> ids = MakeIds(tokens * 3 * 2, 90);
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, ids, {tokens, 3, 2}, "<i2", /*fortran_order=*/true);
  Trace trace = Trace::open(path);

  Trace head = trace.prefix(10);
  EXPECT_EQ(head.tokens(), 10);
  EXPECT_EQ(head.layers(), 3);
  EXPECT_EQ(head.k(), 2);
  EXPECT_EQ(head.experts(), trace.experts());
  EXPECT_EQ(head.source(), path);
  ExpectIds(head, ids, 2);
  EXPECT_THROW(head.at(10, 0), UsageError);

  Trace shorter = head.prefix(3);
  EXPECT_EQ(shorter.tokens(), 3);
  ExpectIds(shorter, ids, 2);
  EXPECT_EQ(trace.prefix(tokens).tokens(), tokens);
  EXPECT_EQ(trace.tokens(), tokens);
}

TEST(NpyTraceTest, PrefixOutsideOneToTokensIsUsageError) {
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, MakeIds(8, 3), {4, 2});
  Trace trace = Trace::open(path);
  EXPECT_THROW(trace.prefix(0), UsageError);
  EXPECT_THROW(trace.prefix(5), UsageError);
  EXPECT_THROW(trace.prefix(-1), UsageError);
}

TEST(NpyTraceTest, AtOutsideTheTraceIsUsageError) {
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, MakeIds(4 * 2 * 2, 3), {4, 2, 2});
  TraceOpenOptions options;
  options.topk = 1;
  Trace trace = Trace::open(path, options);
  EXPECT_THROW(trace.at(-1, 0), UsageError);
  EXPECT_THROW(trace.at(4, 0), UsageError);
  EXPECT_THROW(trace.at(0, 2), UsageError);
  EXPECT_THROW(trace.at(0, 0, 1), UsageError);  // column 1 is hidden by top-k 1
}

TEST(NpyTraceTest, LargeTraceIsDecodedInSeveralBlocks) {
  const std::int64_t tokens = 5000;
  const int layers = 3;
  const int k = 2;
  std::vector<std::int64_t> ids = MakeIds(tokens * layers * k, 1000);
  TempDir dir;
  for (bool fortran : {false, true}) {
    SCOPED_TRACE(fortran ? "Fortran order" : "C order");
    std::string path = dir.file("trace.npy");
    write_npy(path, ids, {tokens, layers, k}, ">i2", fortran, 2);
    Trace trace = Trace::open(path);
    EXPECT_EQ(trace.experts(), 1001);

    std::vector<std::int64_t> sizes;
    trace.for_each_block(1, [&](int, const TraceBlock& block) { sizes.push_back(block.tokens); });
    EXPECT_EQ(sizes, (std::vector<std::int64_t>{kTraceBlockTokens, kTraceBlockTokens,
                                                tokens - 2 * kTraceBlockTokens}));
    ExpectIds(trace, ids, k);
  }
}

class ForEachBlockTest : public ::testing::TestWithParam<int> {};

TEST_P(ForEachBlockTest, VisitsEveryTokenOnceInContiguousWorkerRanges) {
  const int threads = GetParam();
  const std::int64_t tokens = 4 * kTraceBlockTokens + 3 * kTraceBlockTokens + 27;  // 8 blocks
  const int layers = 2;
  std::vector<std::int64_t> ids = MakeIds(tokens * layers, 500);
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, ids, {tokens, layers}, "<u2");
  Trace trace = Trace::open(path);

  const int workers = trace.workers(threads);
  EXPECT_EQ(workers, threads);
  struct Seen {
    std::int64_t first;
    std::int64_t tokens;
    bool ids_match;
  };
  std::vector<std::vector<Seen>> seen(static_cast<std::size_t>(workers));
  trace.for_each_block(threads, [&](int worker, const TraceBlock& block) {
    bool match = true;
    for (int l = 0; l < layers; ++l) {
      for (std::int64_t i = 0; i < block.tokens; ++i) {
        match = match && block.column(l, 0)[i] == ids[(block.first_token + i) * layers + l];
      }
    }
    seen.at(static_cast<std::size_t>(worker)).push_back({block.first_token, block.tokens, match});
  });

  std::vector<int> visits(static_cast<std::size_t>(tokens), 0);
  std::int64_t next = 0;  // worker ranges follow each other in worker order
  for (int w = 0; w < workers; ++w) {
    SCOPED_TRACE("worker " + std::to_string(w));
    ASSERT_FALSE(seen[w].empty());
    for (const Seen& block : seen[w]) {
      EXPECT_EQ(block.first, next);
      EXPECT_GT(block.tokens, 0);
      EXPECT_LE(block.tokens, kTraceBlockTokens);
      EXPECT_TRUE(block.ids_match) << "block at token " << block.first;
      for (std::int64_t t = block.first; t < block.first + block.tokens && t < tokens; ++t) {
        ++visits[static_cast<std::size_t>(t)];
      }
      next = block.first + block.tokens;
    }
  }
  EXPECT_EQ(next, tokens);
  std::int64_t wrong = 0;
  for (int v : visits) wrong += v != 1;
  EXPECT_EQ(wrong, 0) << "tokens visited other than exactly once";
}

INSTANTIATE_TEST_SUITE_P(Threads, ForEachBlockTest, ::testing::Values(1, 2, 7),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "_threads";
                         });

TEST(NpyTraceTest, WorkersAreCappedAtOnePerBlock) {
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, MakeIds(5000, 9), {5000, 1}, "|u1");
  Trace trace = Trace::open(path);
  EXPECT_EQ(trace.workers(1), 1);
  EXPECT_EQ(trace.workers(2), 2);
  EXPECT_EQ(trace.workers(7), 3);
  EXPECT_EQ(trace.prefix(100).workers(7), 1);
}

TEST(NpyTraceTest, ForEachBlockRethrowsAnExceptionFromTheBody) {
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, MakeIds(5000, 9), {5000, 1}, "|u1");
  Trace trace = Trace::open(path);
  EXPECT_THROW(trace.for_each_block(3,
                                    [](int worker, const TraceBlock&) {
                                      if (worker == 1) throw std::runtime_error("body failed");
                                    }),
               std::runtime_error);
}

// ---------------------------------------------------------------------------------------------
// Ids out of range, written by the tests in both byte orders.

struct OutOfRangeParam {
  std::string descr;
  std::int64_t stored;  // the bit pattern encode_npy writes
  std::string text;     // the exact value the message must print
  bool negative;
};

class OutOfRangeIdTest : public ::testing::TestWithParam<OutOfRangeParam> {};

TEST_P(OutOfRangeIdTest, ReportsExactValueTokenAndLayer) {
  const OutOfRangeParam& p = GetParam();
  std::vector<std::int64_t> ids = MakeIds(4 * 3, 9);
  ids[2 * 3 + 1] = p.stored;  // token 2, layer 1
  ids[3 * 3 + 2] = p.stored;  // a later occurrence, not the one reported
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, ids, {4, 3}, p.descr);

  std::string where = "expert id " + p.text + " at token 2, layer 1";
  if (p.negative) {
    EXPECT_TRUE(OpenFails<InputError>(path, {}, {where + " is negative"}));
    return;
  }
  EXPECT_TRUE(OpenFails<InputError>(
      path, {}, {where + " exceeds the largest supported expert count (65536)"}));
  TraceOpenOptions options;
  options.experts = 16;
  EXPECT_TRUE(OpenFails<InputError>(path, options, {where + " is out of range for 16 experts"}));
}

// Top-1 16-bit traces in native byte order have their range checked on the stored ids, block by
// block on every worker: the largest id in the last block sets E, or is named when E is given.
TEST(NpyOutOfRangeTest, SixteenBitTopOneIdsAreCheckedInEveryBlockAndWorker) {
  const std::int64_t tokens = 3 * kTraceBlockTokens + 5;
  std::vector<std::int64_t> ids = MakeIds(tokens * 3, 40);
  ids.back() = 41;  // last token, layer 2
  TempDir dir;
  const std::string path = dir.file("trace.npy");
  for (const char* descr : {"<i2", "<u2"}) {
    write_npy(path, ids, {tokens, 3}, descr);
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(descr) + ", " + std::to_string(threads) + " threads");
      TraceOpenOptions options;
      options.threads = threads;
      EXPECT_EQ(Trace::open(path, options).experts(), 42);
      options.experts = 41;
      EXPECT_TRUE(OpenFails<InputError>(
          path, options,
          {"expert id 41 at token " + std::to_string(tokens - 1) +
           ", layer 2 is out of range for 41 experts (largest id in the trace: 41)"}));
    }
  }
}

std::vector<OutOfRangeParam> OutOfRangeParams() {
  std::vector<OutOfRangeParam> params;
  for (const char* order : {"<", ">"}) {
    std::string o = order;
    params.push_back({o + "i8", 5000000000LL, "5000000000", false});
    params.push_back(
        {o + "i8", std::numeric_limits<std::int64_t>::max(), "9223372036854775807", false});
    params.push_back({o + "i8", -5000000000LL, "-5000000000", true});
    params.push_back(
        {o + "i8", std::numeric_limits<std::int64_t>::min(), "-9223372036854775808", true});
    params.push_back({o + "u8", -1, "18446744073709551615", false});
    params.push_back({o + "u8", static_cast<std::int64_t>(12345678901234567890ULL),
                      "12345678901234567890", false});
    params.push_back({o + "u4", 4000000000LL, "4000000000", false});
    params.push_back({o + "i4", -2147483648LL, "-2147483648", true});
    params.push_back({o + "i4", 65536, "65536", false});
    params.push_back({o + "i2", -300, "-300", true});
  }
  params.push_back({"|i1", -128, "-128", true});
  return params;
}

INSTANTIATE_TEST_SUITE_P(Values, OutOfRangeIdTest, ::testing::ValuesIn(OutOfRangeParams()),
                         [](const ::testing::TestParamInfo<OutOfRangeParam>& info) {
                           const OutOfRangeParam& p = info.param;
                           std::string name = std::string(p.descr[0] == '>' ? "be_" : "le_") +
                                              p.descr.substr(1) + "_";
                           for (char c : p.text)
                             name += c == '-' ? std::string("minus") : std::string(1, c);
                           return name;
                         });

TEST(NpyOutOfRangeTest, LargestIdBeyondInt32IsNamedInExpertsMessage) {
  std::vector<std::int64_t> ids = MakeIds(4 * 3, 9);
  ids[1 * 3 + 0] = 20;
  ids[3 * 3 + 2] = 5000000000LL;
  TempDir dir;
  std::string path = dir.file("trace.npy");
  write_npy(path, ids, {4, 3}, ">i8");
  TraceOpenOptions options;
  options.experts = 16;
  EXPECT_TRUE(
      OpenFails<InputError>(path, options,
                            {"expert id 20 at token 1, layer 0 is out of range for 16 experts",
                             "largest id in the trace: beyond int32"}));
}

TEST(NpyOutOfRangeTest, IdBeyondExpertsFixtureOpensWithoutExpertsOption) {
  Trace trace = Trace::open(Fixture("id_beyond_experts.npy"));
  EXPECT_EQ(trace.k(), 2);
  EXPECT_EQ(trace.experts(), 12);
  EXPECT_EQ(trace.at(2, 3, 1), 8);
  EXPECT_EQ(trace.at(5, 0, 0), 11);
}

// ---------------------------------------------------------------------------------------------
// Files that cannot be read.

TEST(NpyIoTest, MissingFileIsIoErrorNamingThePath) {
  TempDir dir;
  std::string path = dir.file("no-such-trace.npy");
  EXPECT_TRUE(OpenFails<IoError>(path, {}, {"cannot open"}));
}

TEST(NpyIoTest, DirectoryIsIoErrorNamingThePath) {
  TempDir dir;
  EXPECT_TRUE(OpenFails<IoError>(dir.path(), {}, {"not a regular file"}));
}

// ---------------------------------------------------------------------------------------------
// Malformed fixtures: each is rejected with InputError naming the file and the defect.

struct MalformedCase {
  std::string file;
  std::vector<std::string> phrases;
  std::optional<int> experts;
};

std::ostream& operator<<(std::ostream& os, const MalformedCase& c) {
  return os << c.file;
}

class MalformedFixtureTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedFixtureTest, IsRejectedWithInputErrorNamingFileAndDefect) {
  const MalformedCase& c = GetParam();
  TraceOpenOptions options;
  options.experts = c.experts;
  std::string path = Fixture(c.file);
  try {
    Trace::open(path, options);
    ADD_FAILURE() << "Trace::open(" << path << ") did not throw";
  } catch (const InputError& e) {
    std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    for (const std::string& phrase : c.phrases) {
      EXPECT_NE(message.find(phrase), std::string::npos)
          << "missing \"" << phrase << "\" in: " << message;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

const MalformedCase kMalformedCases[] = {
    // Not an npy file, or a broken preamble.
    {"not_npy.csv", {"not an npy file"}, {}},
    {"empty.npy", {"not an npy file"}, {}},
    {"bad_magic.npy", {"not an npy file"}, {}},
    {"version_4_0.npy", {"unsupported npy format version 4.0", "1.0, 2.0, 3.0"}, {}},
    {"truncated_prefix.npy", {"truncated npy header"}, {}},
    {"truncated_header.npy",
     {"truncated npy header", "header length field says 118 bytes", "only 30 bytes"},
     {}},
    // The header length field does not match the header.
    {"header_len_too_long.npy",
     {"header length field (122 bytes)", "runs past the header's newline into the data"},
     {}},
    {"header_len_too_short.npy",
     {"header length field (108 bytes)", "does not end at the header's newline"},
     {}},
    {"header_len_past_eof.npy", {"header length field says 65535 bytes", "only 130 bytes"}, {}},
    // Header dictionary defects.
    {"missing_shape.npy", {"npy header lacks 'shape'"}, {}},
    {"malformed_dict.npy", {"malformed npy header", "expected ',' or '}'"}, {}},
    {"wrong_type.npy", {"malformed npy header", "wrong type"}, {}},
    {"unterminated_shape.npy", {"malformed npy header", "expected an integer"}, {}},
    {"huge_dim.npy", {"malformed npy header", "integer too large"}, {}},
    // Dtypes other than plain integers.
    {"float32.npy", {"dtype '<f4' is a floating-point dtype"}, {}},
    {"float64.npy", {"dtype '<f8' is a floating-point dtype"}, {}},
    {"bool.npy", {"dtype '|b1' is a boolean dtype"}, {}},
    {"object.npy", {"dtype '|O' is an object dtype"}, {}},
    {"structured.npy", {"structured dtype"}, {}},
    {"string.npy", {"dtype '<U2' is a string dtype"}, {}},
    // Shapes.
    {"shape_1d.npy",
     {"shape (6,) has 1 dimension;", "[tokens, layers] or [tokens, layers, k]"},
     {}},
    {"shape_4d.npy", {"shape (2, 3, 2, 2) has 4 dimensions"}, {}},
    {"zero_tokens.npy", {"shape (0, 3) has zero tokens"}, {}},
    {"zero_layers.npy", {"shape (5, 0) has zero layers"}, {}},
    {"zero_k.npy", {"shape (5, 3, 0) has zero k"}, {}},
    {"negative_dim.npy", {"shape (-1, 3) has a negative dimension"}, {}},
    {"k_too_large.npy", {"shape (2, 2, 65) is implausible"}, {}},
    {"shape_overflow.npy", {"shape (8589934592, 2147483648) is too large"}, {}},
    // Data size does not match the shape.
    {"truncated_data.npy", {"truncated", "needs 48 data bytes, the file has 40"}, {}},
    {"trailing_garbage.npy", {"8 unexpected bytes after the data of shape (4, 3) of '|u1'"}, {}},
    // Ids out of range.
    {"negative_id.npy", {"expert id -1 at token 3, layer 1 is negative"}, {}},
    {"id_beyond_experts.npy",
     {"expert id 8 at token 2, layer 3, column 1 is out of range for 8 experts",
      "largest id in the trace: 11"},
     8},
};

INSTANTIATE_TEST_SUITE_P(Fixtures, MalformedFixtureTest, ::testing::ValuesIn(kMalformedCases),
                         [](const ::testing::TestParamInfo<MalformedCase>& info) {
                           std::string name;
                           for (char c : info.param.file) name += c == '.' ? '_' : c;
                           return name;
                         });

}  // namespace
}  // namespace exflow
