"""The Python module's serving-engine layout: decoder layers (dense_layers=) on the SGLang and
EPLB outputs and on reading, redundant slots in all (redundant_total=) where the experts do not
divide over the GPUs, and EPLB's log2phy width (padding=)."""
import json
import os
import tempfile
import unittest

import numpy as np

import exflow


def skewed_ids(tokens, layers, experts, k=2):
    rng = np.random.default_rng(3)
    ids = np.zeros((tokens, layers, k), dtype=np.int32)
    for t in range(tokens):
        base = rng.integers(0, experts)
        for layer in range(layers):
            first = (base + layer) % experts
            ids[t, layer] = [first, (first + 1 + rng.integers(0, 3)) % experts]
    return ids


class ServingLayout(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ids = skewed_ids(300, 3, 12)
        # 12 experts + 4 redundant slots on 8 GPUs: 2 slots each.
        cls.placement = exflow.solve(cls.ids, gpus_per_node=4, nodes=2, redundant_total=4,
                                     time_limit=1, token_time_limit=2)

    def test_redundant_total_fills_every_gpu_to_the_same_slots(self):
        p = self.placement
        self.assertEqual(p.metrics["options"]["redundant_total"], 4)
        self.assertEqual(len(p.replicas), 3 * 4)
        maps = p.to_eplb()
        self.assertEqual(maps["phy2log"].shape, (3, 16))
        for layer in range(3):
            self.assertEqual(sorted(set(maps["phy2log"][layer].tolist())), list(range(12)))
        with self.assertRaisesRegex(ValueError, "not both"):
            exflow.solve(self.ids, gpus_per_node=4, nodes=2, redundant=1, redundant_total=8)
        with self.assertRaisesRegex(ValueError, "do not divide over 8 GPUs"):
            exflow.solve(self.ids, gpus_per_node=4, nodes=2, redundant_total=3)

    def test_dense_layers_add_trivial_rows_and_read_back(self):
        p = self.placement
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sglang.json")
            p.to_sglang(path, dense_layers=[0, 2])
            with open(path) as f:
                rows = json.load(f)["physical_to_logical_map"]
            self.assertEqual(len(rows), 5)
            trivial = [s % 12 for s in range(16)]
            self.assertEqual(rows[0], trivial)
            self.assertEqual(rows[2], trivial)
            back = exflow.read_placement(path, 3, 12, 4, 2, dense_layers=[0, 2])
            self.assertEqual(back.replicas, p.replicas)
            np.testing.assert_array_equal(back.gpu_of, p.gpu_of)
            with self.assertRaisesRegex(ValueError, "give dense_layers"):
                exflow.read_placement(path, 3, 12, 4, 2)
            p.to_sglang(path, dense_layers="deepseek-v3")
            with open(path) as f:
                self.assertEqual(len(json.load(f)["physical_to_logical_map"]), 6)
            p.to_sglang(path, dense_layers=1)
            with open(path) as f:
                self.assertEqual(len(json.load(f)["physical_to_logical_map"]), 4)
        with self.assertRaisesRegex(ValueError, "'llama' is not a count"):
            p.to_sglang("unused.json", dense_layers="llama")
        with self.assertRaises(TypeError):
            p.to_sglang("unused.json", dense_layers=1.5)
        with self.assertRaises(TypeError):
            p.to_sglang("unused.json", dense_layers=[0, "1"])

    def test_evaluate_shows_every_scheme(self):
        p = self.placement
        m = exflow.evaluate(self.ids, p, scheme="deepep")
        self.assertEqual(m["scheme"], "deepep")
        self.assertEqual(sorted(m["schemes"]), ["baseline", "context-coherent", "deepep",
                                                "deepep-ll"])
        self.assertEqual(m["cost"], m["schemes"]["deepep"]["placement"]["cost"])
        self.assertEqual(exflow.evaluate(self.ids, p)["scheme"], "context-coherent")
        with self.assertRaisesRegex(ValueError, "unknown scheme 'ring'"):
            exflow.evaluate(self.ids, p, scheme="ring")

    def test_solve_and_evaluate_take_the_scheme_and_copy_choice(self):
        p = exflow.solve(self.ids, gpus_per_node=4, nodes=2, redundant_total=4, scheme="deepep",
                         time_limit=1, token_time_limit=2)
        m = p.metrics
        self.assertEqual(m["scheme"], "deepep")
        self.assertEqual(m["options"]["scheme"], "deepep")
        self.assertAlmostEqual(m["dispatch"]["cost"] + m["combine"]["cost"], m["cost"])
        even = exflow.evaluate(self.ids, p, scheme="deepep", replica_choice="even")
        nearest = exflow.evaluate(self.ids, p, scheme="deepep")
        self.assertAlmostEqual(nearest["cost"], m["cost"])
        self.assertEqual(even["schemes"]["context-coherent"], nearest["schemes"]["context-coherent"])
        with self.assertRaisesRegex(ValueError, "not coherent"):
            exflow.evaluate(self.ids, p, replica_choice="even")
        with self.assertRaisesRegex(ValueError, "replica_choice"):
            exflow.solve(self.ids, gpus_per_node=4, nodes=2, replica_choice="random")

    def test_eplb_maps_padding_and_dense_rows(self):
        p = self.placement
        wide = p.to_eplb(padding="redundant+1", dense_layers=1)
        self.assertEqual(wide["log2phy"].shape, (4, 12, 5))
        self.assertEqual(wide["phy2log"].dtype, np.int64)
        self.assertEqual(wide["phy2log"][0].tolist(), [s % 12 for s in range(16)])
        narrow = p.to_eplb()
        self.assertEqual(narrow["log2phy"].shape[2], int(narrow["logcnt"].max()))
        np.testing.assert_array_equal(wide["phy2log"][1:], narrow["phy2log"])
        with self.assertRaisesRegex(ValueError, "padding must be"):
            p.to_eplb(padding="wide")


if __name__ == "__main__":
    unittest.main()
