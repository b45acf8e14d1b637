"""exflow.rebalance_experts (DeepSeek EPLB's entry point) and the vLLM and SGLang adapters of
exflow.policies.

Without routing the maps must equal upstream EPLB's outputs in tests/data/eplb/cases.json
(github.com/deepseek-ai/EPLB eplb.py under torch on the CPU); with routing ids they must be a
valid EPLB map whose DeepEP inter-node transfers are no worse than EPLB's. The adapters are fed
data shaped as the engines pass it: vLLM a weight tensor [layers, experts], SGLang
tokens_per_expert [steps, layers, experts] and an EplbAlgorithm enum. The torch tests skip when
torch is not importable."""
import enum
import json
import os
import subprocess
import sys
import types
import unittest
from abc import ABC, abstractmethod

import numpy as np

import exflow
from exflow import policies
from routing_ids import distinct_rows

try:
    import torch
except ImportError:
    torch = None

SOURCE = os.environ.get("EXFLOW_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
NEEDS_TORCH = unittest.skipIf(torch is None, "torch is not importable (Debian: python3-torch)")
MAPS = ("phy2log", "log2phy", "logcnt")


def golden_cases():
    with open(os.path.join(SOURCE, "tests", "data", "eplb", "cases.json")) as f:
        return json.load(f)["cases"]


def shape_args(case):
    return (case["num_replicas"], case["num_groups"], case["num_nodes"], case["num_gpus"])




def clustered_trace(tokens=3000, layers=3, experts=32, k=4, clusters=4, seed=0):
    """Top-k ids where each token keeps to one cluster of experts (e % clusters) in every layer,
    with 10% noise: the clusters interleave EPLB's groups of consecutive experts."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, clusters, size=tokens)[:, None, None]
    members = rng.integers(0, experts // clusters, size=(tokens, layers, k))
    ids = members * clusters + cluster
    noise = rng.random(ids.shape) < 0.1
    ids = np.where(noise, rng.integers(0, experts, size=ids.shape), ids)
    return distinct_rows(ids, experts).astype(np.int32)


def loads_of(ids, experts):
    return np.stack([np.bincount(ids[:, layer].ravel(), minlength=experts)
                     for layer in range(ids.shape[1])]).astype(np.int64)


def coactivation_of(ids, experts):
    """[layers, experts, experts]: tokens of each layer routed to both experts (both triangles)."""
    tokens, layers, k = ids.shape
    counts = np.zeros((layers, experts, experts), dtype=np.int64)
    for layer in range(layers):
        rows = ids[:, layer].astype(np.int64)
        first = np.repeat(rows, k, axis=1).ravel()
        second = np.tile(rows, (1, k)).ravel()
        np.add.at(counts[layer], (first, second), 1)
    return counts


class Sglang(enum.Enum):
    """SGLang's EplbAlgorithm members the adapter serves."""

    deepseek = enum.auto()
    deepseek_hierarchical = enum.auto()


class GoldenEplb(unittest.TestCase):
    def assert_golden(self, case, maps):
        for name, got in zip(MAPS, maps):
            self.assertEqual(np.asarray(got).tolist(), case[name], name)

    def test_numpy_integer_and_real_loads_give_upstream_maps(self):
        cases = golden_cases()
        self.assertGreaterEqual(len(cases), 5)
        for i, case in enumerate(cases):
            for dtype in (np.int64, np.int32, np.float32, np.float64):
                with self.subTest(case=i, dtype=dtype.__name__):
                    weight = np.array(case["weight"], dtype=dtype)
                    maps = exflow.rebalance_experts(weight, *shape_args(case))
                    for m in maps:
                        self.assertIsInstance(m, np.ndarray)
                        self.assertEqual(m.dtype, np.int64)
                    self.assert_golden(case, maps)

    def test_nested_lists(self):
        case = golden_cases()[0]
        self.assert_golden(case, exflow.rebalance_experts(case["weight"], *shape_args(case)))

    @NEEDS_TORCH
    def test_torch_in_torch_out_on_the_device(self):
        for i, case in enumerate(golden_cases()):
            for dtype in (torch.int64, torch.float32, torch.bfloat16):
                if dtype is torch.bfloat16 and max(map(max, case["weight"])) > 256:
                    continue  # bfloat16 holds integers exactly only up to 256
                with self.subTest(case=i, dtype=str(dtype)):
                    weight = torch.tensor(case["weight"], dtype=dtype)
                    maps = exflow.rebalance_experts(weight, *shape_args(case))
                    for m in maps:
                        self.assertIsInstance(m, torch.Tensor)
                        self.assertEqual(m.dtype, torch.int64)
                        self.assertEqual(m.device, weight.device)
                    self.assert_golden(case, [m.numpy() for m in maps])

    def test_the_package_imports_no_torch(self):
        code = ("import sys, numpy as np, exflow, exflow.policies\n"
                "exflow.rebalance_experts(np.ones((1, 4), np.int64), 4, 1, 1, 2)\n"
                "exflow.policies.ExflowEplbPolicy.rebalance_experts(np.ones((1, 4)), 4, 1, 1, 2)\n"
                "print(sorted(m for m in ('torch', 'vllm', 'sglang') if m in sys.modules))\n")
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True)
        self.assertEqual(out.stdout.strip(), "[]")


class Routing(unittest.TestCase):
    LAYERS, EXPERTS, SLOTS, GROUPS, NODES, GPUS = 3, 32, 40, 4, 2, 8

    def setUp(self):
        self.ids = clustered_trace(layers=self.LAYERS, experts=self.EXPERTS)
        self.weight = loads_of(self.ids, self.EXPERTS)

    def plan(self, routing=None, **kw):
        return exflow.rebalance_experts(self.weight, self.SLOTS, self.GROUPS, self.NODES,
                                        self.GPUS, routing=routing, **kw)

    def assert_valid_maps(self, phy2log, log2phy, logcnt):
        L, E, R = self.LAYERS, self.EXPERTS, self.SLOTS
        self.assertEqual(phy2log.shape, (L, R))
        self.assertEqual(logcnt.shape, (L, E))
        self.assertEqual((log2phy.shape[0], log2phy.shape[1]), (L, E))
        self.assertEqual(log2phy.shape[2], logcnt.max())
        for m in (phy2log, log2phy, logcnt):
            self.assertEqual(m.dtype, np.int64)
        for layer in range(L):
            self.assertTrue((logcnt[layer] >= 1).all())
            self.assertEqual(np.bincount(phy2log[layer], minlength=E).tolist(),
                             logcnt[layer].tolist())
            for e in range(E):
                slots = log2phy[layer, e]
                n = int(logcnt[layer, e])
                self.assertTrue((slots[n:] == -1).all())
                self.assertEqual(sorted(slots[:n].tolist()),
                                 np.flatnonzero(phy2log[layer] == e).tolist())
        # GPU-major, R / G slots per GPU: the placement these slots make is a valid one
        placement = exflow._native._placement_from_phy2log(
            phy2log, self.GPUS // self.NODES, self.NODES, E)
        self.assertEqual((placement.layers, placement.experts, placement.gpus),
                         (L, E, self.GPUS))

    def inter_node_transfers(self, phy2log):
        placement = exflow._native._placement_from_phy2log(
            phy2log, self.GPUS // self.NODES, self.NODES, self.EXPERTS)
        return exflow.evaluate(self.ids, placement, scheme="deepep")["inter_transfers"]

    def test_routing_gives_a_valid_map(self):
        self.assert_valid_maps(*self.plan(self.ids))
        self.assert_valid_maps(*self.plan(self.ids[:, :, 0], scheme="standard",
                                          max_load_ratio=1.5))

    def test_previous_keeps_slots_and_the_move_budget(self):
        ids = clustered_trace(seed=3)
        drifted = clustered_trace(seed=4)
        weight = loads_of(drifted, 32)
        old = exflow.rebalance_experts(loads_of(ids, 32), 40, 4, 2, 8, routing=ids)[0]
        # Loads alone: EPLB's answer, with every expert that stays on its GPU in its old slot.
        eplb = exflow.rebalance_experts(weight, 40, 4, 2, 8)[0]
        kept = exflow.rebalance_experts(weight, 40, 4, 2, 8, previous=old)
        for layer in range(3):
            for gpu in range(8):
                span = slice(gpu * 5, gpu * 5 + 5)
                self.assertEqual(sorted(kept[0][layer, span]), sorted(eplb[layer, span]))
                for slot in range(gpu * 5, gpu * 5 + 5):
                    if old[layer, slot] in eplb[layer, span]:
                        self.assertEqual(kept[0][layer, slot], old[layer, slot])
        self.assert_valid_maps(*kept)
        # With routing: nothing moves without a budget, at most max_moves slots with one.
        same = exflow.rebalance_experts(weight, 40, 4, 2, 8, routing=drifted, previous=old,
                                        max_moves=0)
        np.testing.assert_array_equal(same[0], old)
        for budget in (4, 12):
            maps = exflow.rebalance_experts(weight, 40, 4, 2, 8, routing=drifted, previous=old,
                                            max_moves=budget)
            self.assertLessEqual(int((maps[0] != old).sum()), budget)
            self.assert_valid_maps(*maps)
        with self.assertRaisesRegex(ValueError, "max_moves"):
            exflow.rebalance_experts(weight, 40, 4, 2, 8, previous=old, max_moves=3)

    def test_deepep_inter_node_transfers_no_worse_than_eplb(self):
        eplb = self.inter_node_transfers(self.plan()[0])
        ours = self.inter_node_transfers(self.plan(self.ids)[0])
        self.assertLess(ours, eplb)

    def test_eplb_maps_are_valid_by_the_same_checks(self):
        self.assert_valid_maps(*self.plan())

    @NEEDS_TORCH
    def test_torch_routing(self):
        maps = exflow.rebalance_experts(torch.from_numpy(self.weight), self.SLOTS, self.GROUPS,
                                        self.NODES, self.GPUS,
                                        routing=torch.from_numpy(self.ids.astype(np.int64)))
        self.assertTrue(all(isinstance(m, torch.Tensor) for m in maps))
        self.assert_valid_maps(*(m.numpy() for m in maps))

    def test_coactivation_counts_give_valid_maps_and_cut_deepep_traffic(self):
        counts = coactivation_of(self.ids, self.EXPERTS)
        maps = self.plan(counts)
        self.assert_valid_maps(*maps)
        self.assertLess(self.inter_node_transfers(maps[0]),
                        self.inter_node_transfers(self.plan()[0]))
        # One triangle or both, integer or real: the same pairs, so the same plan.
        upper = np.triu(counts, 1)
        np.testing.assert_array_equal(self.plan(upper)[0], maps[0])
        np.testing.assert_array_equal(self.plan(counts.astype(np.float32))[0], maps[0])
        self.assert_valid_maps(*self.plan(counts, scheme="standard", time_limit=0.5))

    def test_coactivation_pair_sample_follows_the_counts(self):
        from exflow import rebalance
        counts = np.zeros((2, 4, 4), dtype=np.int64)
        counts[:, 0, 1] = 3
        counts[:, 2, 3] = 1
        counts[1, 0, 0] = 100  # the diagonal (an expert's own load) is not a pair
        ids = rebalance._pair_ids(counts, "deepep")
        self.assertEqual(ids.shape, (rebalance.PAIR_ROWS, 2, 2))
        for layer in range(2):
            pairs = [tuple(row) for row in ids[:, layer].tolist()]
            self.assertEqual(pairs.count((0, 1)), rebalance.PAIR_ROWS * 3 // 4)
            self.assertEqual(pairs.count((2, 3)), rebalance.PAIR_ROWS // 4)
        # Shuffled: the pairs are not dealt to the owning GPUs in blocks.
        self.assertNotEqual(len(set(map(tuple, ids[:8, 0].tolist()))), 1)

    @NEEDS_TORCH
    def test_torch_coactivation_counts(self):
        counts = torch.from_numpy(coactivation_of(self.ids, self.EXPERTS)).float()
        maps = exflow.rebalance_experts(torch.from_numpy(self.weight), self.SLOTS, self.GROUPS,
                                        self.NODES, self.GPUS, routing=counts)
        self.assertTrue(all(isinstance(m, torch.Tensor) for m in maps))
        self.assert_valid_maps(*(m.numpy() for m in maps))

    def test_bad_coactivation_counts(self):
        counts = coactivation_of(self.ids, self.EXPERTS)
        negative = counts.copy()
        negative[1, 2, 3] = -1
        not_finite = counts.astype(np.float64)
        not_finite[2, 0, 5] = np.nan
        bad = {
            "coherent needs routing between layers": (counts, {"scheme": "coherent"}, "coherent"),
            "negative": (negative, {}, r"\[1, 2, 3\]"),
            "nan": (not_finite, {}, r"\[2, 0, 5\]"),
            "a layer without pairs": (np.eye(self.EXPERTS, dtype=np.int64)[None].repeat(3, 0),
                                      {}, "layer 0"),
            "bool": (counts > 0, {}, "dtype"),
            "time limit": (counts, {"time_limit": -1}, "time_limit"),
        }
        for what, (routing, kw, text) in bad.items():
            with self.subTest(what), self.assertRaisesRegex(ValueError, text):
                self.plan(routing, **kw)
        with self.assertRaisesRegex(ValueError, "time_limit"):
            self.plan(time_limit=1)

    def test_bad_routing(self):
        bad = {
            "float ids": self.ids.astype(np.float32),
            "other layers": self.ids[:, :2],
            "id beyond the experts": np.where(self.ids == 5, self.EXPERTS, self.ids),
            "negative id": np.where(self.ids == 5, -1, self.ids),
            "one dimension": self.ids[:, 0, 0],
        }
        for what, routing in bad.items():
            with self.subTest(what), self.assertRaises(ValueError) as e:
                self.plan(routing)
            self.assertIn("routing", str(e.exception))


class BadInput(unittest.TestCase):
    weight = np.arange(1, 25, dtype=np.int64).reshape(2, 12)

    def assert_refused(self, name, *args, **kw):
        with self.assertRaises(ValueError) as e:
            exflow.rebalance_experts(*args, **kw)
        self.assertIn(name, str(e.exception))
        return str(e.exception)

    def test_shapes_and_topology(self):
        w = self.weight
        self.assertIn("[12]", self.assert_refused("weight", w[0], 16, 4, 2, 8))
        self.assert_refused("weight", np.zeros((2, 0)), 16, 4, 2, 8)
        self.assertIn("[2, 12]", self.assert_refused("num_replicas", w, 8, 4, 2, 4))
        self.assert_refused("num_replicas", w, 18, 4, 2, 8)
        self.assert_refused("num_nodes", w, 16, 4, 3, 8)
        self.assertIn("[2, 12]", self.assert_refused("num_groups", w, 16, 8, 2, 8))
        self.assert_refused("num_gpus", w, 16, 4, 2, 0)
        self.assert_refused("num_groups", w, 16, 2.0, 2, 8)
        self.assert_refused("num_nodes", w, 16, 4, True, 8)

    def test_groups_that_the_nodes_do_not_divide_take_the_global_policy(self):
        expected = exflow.rebalance_experts(self.weight, 16, 1, 1, 8)
        for got, want in zip(exflow.rebalance_experts(self.weight, 16, 5, 2, 8), expected):
            self.assertEqual(got.tolist(), want.tolist())

    def test_loads(self):
        negative = self.weight.copy()
        negative[1, 3] = -1
        self.assertIn("layer 1 expert 3", self.assert_refused("weight", negative, 16, 4, 2, 8))
        self.assert_refused("weight", np.where(self.weight == 3, np.nan, 1.0), 16, 4, 2, 8)
        self.assert_refused("weight", self.weight > 3, 16, 4, 2, 8)
        self.assert_refused("weight", [["a"] * 12] * 2, 16, 4, 2, 8)

    def test_previous_and_max_moves(self):
        args = (self.weight, 16, 4, 2, 8)
        self.assertIn("[2, 16]", self.assert_refused(
            "previous", *args, previous=np.zeros((2, 12), np.int64)))
        self.assert_refused("previous", *args, previous=np.zeros((2, 16)))
        self.assert_refused("previous", *args, previous=np.full((2, 16), 12))
        self.assert_refused("max_moves", *args, max_moves=-1)
        self.assert_refused("max_moves", *args, max_moves=1.5)

class VllmPolicy(unittest.TestCase):
    @NEEDS_TORCH
    def test_returns_upstream_phy2log_as_an_int64_cpu_tensor(self):
        for i, case in enumerate(golden_cases()):
            with self.subTest(case=i):
                weight = torch.tensor(case["weight"], dtype=torch.int64)
                old = torch.arange(case["num_replicas"]).remainder(case["experts"])
                old = old.expand(case["layers"], -1).contiguous()
                per_gpu = case["num_replicas"] // case["num_gpus"]
                for previous in (None, old):
                    phy2log = policies.ExflowEplbPolicy.rebalance_experts(
                        weight, case["num_replicas"], case["num_groups"], case["num_nodes"],
                        case["num_gpus"], previous)
                    self.assertIsInstance(phy2log, torch.Tensor)
                    self.assertEqual((phy2log.dtype, phy2log.device.type), (torch.int64, "cpu"))
                    if previous is None:
                        self.assertEqual(phy2log.tolist(), case["phy2log"])
                        continue
                    # With the old map: upstream's experts on each GPU, in kept slots.
                    for got, want in zip(phy2log.tolist(), case["phy2log"]):
                        for g in range(case["num_gpus"]):
                            span = slice(g * per_gpu, (g + 1) * per_gpu)
                            self.assertEqual(sorted(got[span]), sorted(want[span]))

    @NEEDS_TORCH
    def test_subclass_of_vllm_abstract_policy(self):
        class AbstractEplbPolicy(ABC):
            @classmethod
            @abstractmethod
            def rebalance_experts(cls, weight, num_replicas, num_groups, num_nodes, num_ranks,
                                  old_global_expert_indices=None):
                raise NotImplementedError

        names = ["vllm", "vllm.distributed", "vllm.distributed.eplb",
                 "vllm.distributed.eplb.policy", "vllm.distributed.eplb.policy.abstract"]
        saved = {n: sys.modules.get(n) for n in names}
        for n in names:
            sys.modules[n] = types.ModuleType(n)
        sys.modules[names[-1]].AbstractEplbPolicy = AbstractEplbPolicy
        try:
            cls = policies.vllm_policy_class()
        finally:
            for n, module in saved.items():
                if module is None:
                    del sys.modules[n]
                else:
                    sys.modules[n] = module
        self.assertTrue(issubclass(cls, AbstractEplbPolicy))
        case = golden_cases()[1]
        phy2log = cls.rebalance_experts(torch.tensor(case["weight"]), *shape_args(case))
        self.assertEqual(phy2log.tolist(), case["phy2log"])


class SglangAlgorithm(unittest.TestCase):
    @staticmethod
    def tokens_per_expert(case):
        """case's weight split over 3 recorded steps, [steps, layers, experts] int64."""
        weight = torch.tensor(case["weight"], dtype=torch.int64)
        first = weight // 2
        return torch.stack([first, weight - first, torch.zeros_like(weight)])

    @NEEDS_TORCH
    def test_upstream_maps_as_int64_cpu_tensors(self):
        for i, case in enumerate(golden_cases()):
            hierarchical = case["num_groups"] % case["num_nodes"] == 0
            algorithm = Sglang.deepseek_hierarchical if hierarchical else Sglang.deepseek
            with self.subTest(case=i, algorithm=algorithm.name):
                maps = policies.sglang_rebalance_experts(
                    self.tokens_per_expert(case), case["num_replicas"],
                    case["num_replicas"] // case["num_gpus"], case["num_groups"],
                    case["num_nodes"], algorithm)
                self.assertEqual(len(maps), 3)
                for name, m in zip(MAPS, maps):
                    self.assertEqual((m.dtype, m.device.type), (torch.int64, "cpu"))
                    self.assertEqual(m.tolist(), case[name], name)

    @NEEDS_TORCH
    def test_deepseek_is_the_global_policy(self):
        case = next(c for c in golden_cases() if c["num_nodes"] > 1
                    and c["num_groups"] % c["num_nodes"] == 0)
        per_gpu = case["num_replicas"] // case["num_gpus"]
        maps = policies.sglang_rebalance_experts(
            self.tokens_per_expert(case), case["num_replicas"], per_gpu, None,
            case["num_nodes"], "deepseek")
        expected = exflow.rebalance_experts(np.array(case["weight"]), case["num_replicas"], 1, 1,
                                            case["num_gpus"])
        for got, want in zip(maps, expected):
            self.assertEqual(got.tolist(), want.tolist())

    @NEEDS_TORCH
    def test_bad_arguments(self):
        case = golden_cases()[0]
        tokens = self.tokens_per_expert(case)
        args = (case["num_replicas"], case["num_replicas"] // case["num_gpus"])
        with self.assertRaises(ValueError) as e:
            policies.sglang_rebalance_experts(tokens, *args, 4, 2, "elasticity_aware")
        self.assertIn("algorithm", str(e.exception))
        with self.assertRaises(ValueError) as e:
            policies.sglang_rebalance_experts(tokens, *args, None, 2,
                                              Sglang.deepseek_hierarchical)
        self.assertIn("num_groups", str(e.exception))
        with self.assertRaises(ValueError) as e:
            policies.sglang_rebalance_experts(tokens, case["num_replicas"], 3, 4, 2,
                                              Sglang.deepseek)
        self.assertIn("num_local_physical_experts", str(e.exception))
        with self.assertRaises(ValueError) as e:
            policies.sglang_rebalance_experts(tokens[0], *args, 4, 2, Sglang.deepseek)
        self.assertIn("tokens_per_expert", str(e.exception))


if __name__ == "__main__":
    unittest.main()
