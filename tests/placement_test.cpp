// Placement, topology and the original tool's CSV and file-name conventions.
#include "exflow/placement.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "exflow/error.hpp"
#include "exflow/topology.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

using test::TempDir;

template <class E>
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

TEST(Topology, HopClassesAndCosts) {
  Topology t(2, 4, 1.5, 7.0);
  EXPECT_EQ(t.gpus(), 8);
  EXPECT_EQ(t.node_of(3), 0);
  EXPECT_EQ(t.node_of(4), 1);
  EXPECT_EQ(t.hop(2, 2), Hop::kLocal);
  EXPECT_EQ(t.hop(0, 3), Hop::kIntraNode);
  EXPECT_EQ(t.hop(3, 4), Hop::kInterNode);
  EXPECT_DOUBLE_EQ(t.cost(0, 3), 1.5);
  EXPECT_DOUBLE_EQ(t.cost(7, 0), 7.0);
  EXPECT_DOUBLE_EQ(t.cost(5, 5), 0.0);
}

TEST(Topology, RejectsBadShapesAndCosts) {
  EXPECT_THROW(Topology(0, 4), UsageError);
  EXPECT_THROW(Topology(1, 0), UsageError);
  EXPECT_THROW(Topology(1, 2, -1.0, 2.0), UsageError);
}

TEST(Topology, ExpertsMustDivideEvenly) {
  Topology t(2, 2);
  EXPECT_EQ(t.experts_per_gpu(8), 2);
  std::string msg = message_of<UsageError>([&] { t.experts_per_gpu(6); });
  EXPECT_NE(msg.find("6 experts"), std::string::npos) << msg;
  EXPECT_NE(msg.find("divisible"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 node(s) x 2 GPUs"), std::string::npos) << msg;
}

TEST(Placement, VanillaIsContiguous) {
  Placement p = vanilla_placement(3, 8, Topology(1, 4));
  for (int l = 0; l < 3; ++l) {
    EXPECT_EQ(p.gpu(l, 0), 0);
    EXPECT_EQ(p.gpu(l, 1), 0);
    EXPECT_EQ(p.gpu(l, 2), 1);
    EXPECT_EQ(p.gpu(l, 7), 3);
  }
  EXPECT_NO_THROW(validate(p, Topology(1, 4), Balance::kExact));
  EXPECT_THROW(vanilla_placement(3, 6, Topology(1, 4)), UsageError);
}

TEST(Placement, ValidateNamesLayerAndGpu) {
  Topology t(1, 2);
  Placement p = vanilla_placement(2, 4, t);
  p.set(1, 2, 0);  // layer 1 now has 3 experts on GPU 0
  std::string msg = message_of<InputError>([&] { validate(p, t, Balance::kExact, "x.csv"); });
  EXPECT_NE(msg.find("x.csv: layer 1 has 3 experts on GPU 0"), std::string::npos) << msg;
  EXPECT_NO_THROW(validate(p, t, Balance::kNone));
  p.set(0, 3, 5);
  msg = message_of<InputError>([&] { validate(p, t, Balance::kNone); });
  EXPECT_NE(msg.find("layer 0 expert 3 is on GPU 5"), std::string::npos) << msg;
}

TEST(Placement, SetKeepsTheLowestCopyInGpuOfAndEqualityComparesCopies) {
  // Expert 0 of layer 0 on GPU 0 with a replica on 1; moving the gpu_of copy to GPU 2 leaves
  // copies {1, 2}: gpu_of becomes 1, the replica 2.
  Placement p(1, 4, 3);
  p.add_replica(0, 0, 1);
  p.set(0, 0, 2);
  EXPECT_EQ(p.gpu(0, 0), 1);
  EXPECT_EQ(p.copies(0, 0), (std::vector<int>{1, 2}));
  ASSERT_EQ(p.replicas().size(), 1u);
  EXPECT_EQ(p.replicas()[0], (Replica{0, 0, 2}));
  // The same copies built the other way round compare equal.
  Placement q(1, 4, 3);
  q.set(0, 0, 2);
  q.add_replica(0, 0, 1);
  EXPECT_EQ(p, q);
  // A GPU that already holds another copy is refused, and the placement is unchanged; moving
  // the copy to where it is changes nothing.
  EXPECT_THROW(p.set(0, 0, 2), UsageError);
  EXPECT_EQ(p, q);
  p.set(0, 0, 1);
  EXPECT_EQ(p, q);
  // Moving the lowest copy below the others keeps the order too; other experts are untouched.
  p.add_replica(0, 3, 2);
  p.set(0, 3, 1);
  EXPECT_EQ(p.copies(0, 3), (std::vector<int>{1, 2}));
  EXPECT_EQ(p.gpu(0, 3), 1);
  EXPECT_EQ(p.copies(0, 0), (std::vector<int>{1, 2}));
  for (int e = 0; e < 4; ++e) {
    const std::vector<int> c = p.copies(0, e);
    EXPECT_EQ(p.gpu(0, e), c.front()) << "expert " << e;
  }
}

TEST(PlacementCsv, RoundTripIsExactAndAtomic) {
  TempDir dir;
  Topology t(2, 2);
  Placement p(3, 8, 4);
  for (int l = 0; l < 3; ++l) {
    for (int e = 0; e < 8; ++e) p.set(l, e, (e * 3 + l) % 4);
  }
  std::string path = dir.file("out/p.csv");
  write_placement_csv(path, p);
  EXPECT_EQ(read_placement_csv(path, 3, 8, 4), p);
  std::string text = test::read_bytes(path);
  EXPECT_EQ(text.substr(0, 16), "Expert,Node\n0,0\n");
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("out"))) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1) << "a temporary file was left behind";
}

TEST(PlacementCsv, AcceptsAnyRowOrderCrlfAndBlankLines) {
  TempDir dir;
  test::write_bytes(dir.file("p.csv"), "Expert,Node\r\n3,1\r\n\r\n0,0\r\n2,1\r\n1,0\r\n");
  Placement p = read_placement_csv(dir.file("p.csv"), 1, 4, 2);
  EXPECT_EQ(p.gpu_of(), (std::vector<int>{0, 0, 1, 1}));
}

struct BadCsv {
  std::string contents;
  std::string expected;
};

class PlacementCsvErrors : public ::testing::TestWithParam<BadCsv> {};

TEST_P(PlacementCsvErrors, OneClearLine) {
  TempDir dir;
  std::string path = dir.file("bad.csv");
  test::write_bytes(path, GetParam().contents);
  std::string msg = message_of<InputError>([&] { read_placement_csv(path, 2, 2, 2); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find(GetParam().expected), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PlacementCsvErrors,
    ::testing::Values(BadCsv{"", "no 'Expert,Node' header"},
                      BadCsv{"Layer,GPU\n0,0\n", "expected the header"},
                      BadCsv{"Expert,Node\n0,0\n1,x\n", ":3: expected two integers"},
                      BadCsv{"Expert,Node\n0,0\n1,0,5\n", ":3: expected two integers"},
                      BadCsv{"Expert,Node\n0,0\n9,0\n", ":3: expert 9 is out of range"},
                      BadCsv{"Expert,Node\n0,2\n", ":2: GPU 2 of expert 0 is out of range"},
                      BadCsv{"Expert,Node\n0,0\n1,1\n3,1\n",
                             "expert 2 (layer 1, expert 0) is missing"}));

TEST(PlacementCsv, ReplicaRowsRoundTrip) {
  TempDir dir;
  std::string path = dir.file("replicas.csv");
  // 2 layers x 2 experts on 2 GPUs; expert 0 of layer 0 has a replica on GPU 0 (listed second,
  // so it becomes the first copy), expert 1 of layer 1 one on GPU 1.
  test::write_bytes(path, "Expert,Node\n0,1\n1,0\n2,0\n3,0\n0,0\n3,1\n2,1\n");
  Placement p = read_placement_csv(path, 2, 2, 2);
  EXPECT_EQ(p.gpu(0, 0), 0);
  EXPECT_EQ(p.copies(0, 0), (std::vector<int>{0, 1}));
  EXPECT_EQ(p.copies(1, 1), (std::vector<int>{0, 1}));
  EXPECT_EQ(p.copies(1, 0), (std::vector<int>{0, 1}));
  EXPECT_EQ(p.replicas().size(), 3u);
  EXPECT_EQ(p.slots_per_gpu(0), (std::vector<int>{2, 1}));
  write_placement_csv(dir.file("copy.csv"), p);
  EXPECT_EQ(read_placement_csv(dir.file("copy.csv"), 2, 2, 2), p);
  EXPECT_EQ(test::read_bytes(dir.file("copy.csv")),
            "Expert,Node\n0,0\n1,0\n2,0\n3,0\n0,1\n2,1\n3,1\n");
  // Layer 0 has 2 copies on GPU 0 and 1 on GPU 1: unbalanced.
  std::string msg =
      message_of<InputError>([&] { validate(p, Topology(1, 2), Balance::kExact, "replicas.csv"); });
  EXPECT_NE(msg.find("layer 0 has 2 experts + 1 replicas = 3 slots, which cannot fill the 2 GPUs "
                     "equally"),
            std::string::npos)
      << msg;
}

TEST(Placement, ReplicasKeepTheLowestCopyFirstAndBalanceCountsSlots) {
  Placement p(1, 4, 2, {0, 0, 1, 1});
  p.add_replica(0, 2, 0);  // expert 2: copies {0, 1}, gpu_of becomes 0
  p.add_replica(0, 0, 1);
  EXPECT_EQ(p.gpu(0, 2), 0);
  EXPECT_EQ(p.replicas(), (std::vector<Replica>{{0, 0, 1}, {0, 2, 1}}));
  EXPECT_EQ(p.slots_per_gpu(0), (std::vector<int>{3, 3}));
  EXPECT_NO_THROW(validate(p, Topology(1, 2), Balance::kExact));
  EXPECT_THROW(p.add_replica(0, 2, 1), UsageError);
  EXPECT_THROW(p.add_replica(0, 4, 1), UsageError);
  Placement q(1, 4, 2, {0, 0, 1, 1});
  q.add_replica(0, 0, 1);
  q.add_replica(0, 2, 0);
  EXPECT_EQ(p, q);  // the same copies in another order compare equal
}

TEST(PlacementCsv, MissingFileIsIoError) {
  EXPECT_THROW(read_placement_csv("/nonexistent/p.csv", 1, 2, 2), IoError);
}

TEST(PlacementCsv, ReadsTheOriginalToolsMixtralSolutions) {
  if (!test::shared_data_available()) GTEST_SKIP() << "../shared/data not present";
  const std::string dir = test::shared_data("exflow-mixtral-solutions/");
  for (int gpus : {4, 8}) {
    std::string name =
        gpus == 4
            ? "solution_intra4_inter1_cost17.495347692691237_cintra5.831782564230412_cinter0.csv"
            : "solution_intra8_inter1_cost22.166013704896926_cintra3.166573386413847_cinter0.csv";
    Placement p = read_placement_csv(dir + name, 32, 8, gpus);
    EXPECT_NO_THROW(validate(p, Topology(1, gpus), Balance::kExact, name));
    TempDir tmp;
    write_placement_csv(tmp.file("copy.csv"), p);
    EXPECT_EQ(read_placement_csv(tmp.file("copy.csv"), 32, 8, gpus), p);
  }
}

TEST(SeedNames, PythonFloatRepr) {
  EXPECT_EQ(python_float_repr(17.495347692691237), "17.495347692691237");
  EXPECT_EQ(python_float_repr(5.831782564230412), "5.831782564230412");
  EXPECT_EQ(python_float_repr(2.0), "2.0");
  EXPECT_EQ(python_float_repr(0.5), "0.5");
  EXPECT_EQ(python_float_repr(0.1), "0.1");
  EXPECT_EQ(python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(python_float_repr(0.00001), "1e-05");
  EXPECT_EQ(python_float_repr(1.5e-7), "1.5e-07");
  EXPECT_EQ(python_float_repr(123456789012345.0), "123456789012345.0");
  EXPECT_EQ(python_float_repr(1e16), "1e+16");
  EXPECT_EQ(python_float_repr(1.25e22), "1.25e+22");
  EXPECT_EQ(python_float_repr(-3.75), "-3.75");
  EXPECT_EQ(python_float_repr(0.0), "0.0");
}

TEST(SeedNames, FileNameMatchesTheOriginalTool) {
  EXPECT_EQ(seed_solution_filename(4, 1, 17.495347692691237, 5.831782564230412, 0.0),
            "solution_intra4_inter1_cost17.495347692691237_cintra5.831782564230412_cinter0.csv");
  EXPECT_EQ(seed_solution_filename(2, 2, 3.5, 1.5, 0.5),
            "solution_intra2_inter2_cost3.5_cintra1.5_cinter0.5.csv");
}

}  // namespace
}  // namespace exflow
