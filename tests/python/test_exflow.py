"""The Python module against the CLI: the same placements and metrics, any integer array layout
in, ValueError for bad input, and the GIL released during solves.

Runs under pytest (Debian's python3-pytest) or `python3 -m unittest`. Needs PYTHONPATH to hold
the built module and EXFLOW_CLI / EXFLOW_SOURCE_DIR (ctest sets them)."""
import json
import os
import subprocess
import tempfile
import threading
import unittest

import numpy as np

import exflow

SOURCE = os.environ.get("EXFLOW_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.environ.get("EXFLOW_CLI", os.path.join(SOURCE, "build", "bin", "exflow"))
EXAMPLE = os.path.join(SOURCE, "examples", "esft-intent-top6.npy")


def cli_json(*args):
    out = subprocess.run([CLI, *args, "--json", "--quiet"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


class Solve(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ids = np.load(EXAMPLE)[:3000, :, :1]  # top-1, first 3000 tokens: a fast solve
        cls.placement = exflow.solve(cls.ids, gpus_per_node=4)

    def test_placement_shape_and_balance(self):
        p = self.placement
        self.assertEqual((p.layers, p.experts, p.gpus, p.gpus_per_node, p.nodes), (26, 64, 4, 4, 1))
        self.assertEqual(p.gpu_of.shape, (26, 64))
        self.assertEqual(p.gpu_of.dtype, np.int32)
        for layer in p.gpu_of:
            self.assertEqual(np.bincount(layer, minlength=4).tolist(), [16, 16, 16, 16])
        self.assertEqual(p.replicas, [])

    def test_metrics_are_the_clis(self):
        with tempfile.TemporaryDirectory() as d:
            np.save(os.path.join(d, "ids.npy"), self.ids)
            self.placement.to_csv(os.path.join(d, "p.csv"))
            cli = cli_json("eval", os.path.join(d, "ids.npy"), os.path.join(d, "p.csv"),
                           "--gpus-per-node", "4")
        m = self.placement.metrics
        for key in ("cost", "intra", "inter", "cintra", "cinter", "local_fraction",
                    "load_ratio_max", "load_ratio_mean"):
            self.assertEqual(m[key], cli[key], key)
        self.assertEqual(m["vanilla"]["cost"], cli["vanilla"]["cost"])
        self.assertEqual(m["baseline"]["cost"], cli["baseline"]["cost"])
        self.assertLess(m["cost"], m["vanilla"]["cost"])
        self.assertIn(m["method"], ("exact", "fast", "ilp"))

    def test_same_as_the_cli_solve(self):
        with tempfile.TemporaryDirectory() as d:
            np.save(os.path.join(d, "ids.npy"), self.ids)
            cli = cli_json("solve", os.path.join(d, "ids.npy"), "--gpus-per-node", "4",
                           "--out-dir", d)
            self.assertAlmostEqual(cli["cost"], self.placement.metrics["cost"], places=12)

    def test_evaluate_and_formats(self):
        m = exflow.evaluate(self.ids, self.placement)
        self.assertEqual(m["cost"], self.placement.metrics["cost"])
        eplb = self.placement.to_eplb()
        self.assertEqual(eplb["phy2log"].shape, (26, 64))
        self.assertEqual(eplb["logcnt"].tolist(), np.ones((26, 64), dtype=int).tolist())
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "loc.json")
            self.placement.to_sglang(path)
            np.save(os.path.join(d, "ids.npy"), self.ids)
            cli = cli_json("eval", os.path.join(d, "ids.npy"), path, "--gpus-per-node", "4")
            self.assertEqual(cli["cost"], m["cost"])
            ascend = os.path.join(d, "expert_map.json")
            self.placement.to_vllm_ascend(ascend)
            with open(ascend) as f:
                doc = json.load(f)
            self.assertEqual(doc["moe_layer_count"], 26)
            self.assertEqual(len(doc["layer_list"][0]["device_list"]), 4)
            cli = cli_json("eval", os.path.join(d, "ids.npy"), ascend, "--gpus-per-node", "4")
            self.assertEqual(cli["cost"], m["cost"])
            again = exflow.read_placement(self._csv(d), 26, 64, 4)
            self.assertTrue((again.gpu_of == self.placement.gpu_of).all())

    def _csv(self, d):
        path = os.path.join(d, "p.csv")
        self.placement.to_csv(path)
        return path

    def test_placement_from_an_array(self):
        vanilla = exflow.Placement(np.repeat(np.arange(4), 16)[None, :].repeat(26, axis=0), 4)
        m = exflow.evaluate(self.ids, vanilla)
        self.assertEqual(m["cost"], self.placement.metrics["vanilla"]["cost"])


class Inputs(unittest.TestCase):
    def setUp(self):
        self.ids = np.load(EXAMPLE)[:500, :6, :2].astype(np.int32)

    def cost(self, ids):
        return exflow.solve(ids, gpus_per_node=4, method="fast", seed=3).metrics["cost"]

    def test_every_integer_layout_gives_the_same_answer(self):
        expected = self.cost(self.ids)
        wide = np.zeros((500, 6, 4), dtype=np.int32)
        wide[:, :, ::2] = self.ids
        for variant in (self.ids.astype(np.int8), self.ids.astype(np.uint16),
                        self.ids.astype(np.int64), np.asfortranarray(self.ids),
                        self.ids.astype(">i4"),                   # non-native: copied
                        wide[:, :, ::2],                          # strided: copied
                        self.ids.tolist()):
            self.assertEqual(self.cost(variant), expected)

    def test_array_protocol_and_dlpack_objects(self):
        expected = self.cost(self.ids)

        class ArrayLike:  # what a framework tensor without DLPack offers
            def __init__(self, a):
                self.a = a

            def __array__(self, dtype=None):
                return self.a

        class DLPackOnly:  # a CPU torch tensor offers this pair
            def __init__(self, a):
                self.a = a

            def __dlpack__(self, stream=None):
                return self.a.__dlpack__()

            def __dlpack_device__(self):
                return self.a.__dlpack_device__()

        self.assertEqual(self.cost(ArrayLike(self.ids)), expected)
        self.assertEqual(self.cost(DLPackOnly(self.ids)), expected)

    def test_bad_input_is_a_value_error_with_the_clis_message(self):
        with self.assertRaisesRegex(TypeError, "integer array, got dtype float32"):
            exflow.solve(self.ids.astype(np.float32), gpus_per_node=4)
        with self.assertRaisesRegex(ValueError, "3 dimensions|1 dimensions"):
            exflow.profile(self.ids.ravel())
        bad = self.ids.copy()
        bad[7, 2, 1] = -3
        with self.assertRaisesRegex(ValueError, "-3"):
            exflow.profile(bad)
        with self.assertRaisesRegex(ValueError, "divisible by the GPU count"):
            exflow.solve(self.ids, gpus_per_node=3)
        with self.assertRaisesRegex(ValueError, "'auto', 'none' or a number"):
            exflow.solve(self.ids, gpus_per_node=4, max_load_ratio="lots")
        p = exflow.solve(self.ids, gpus_per_node=4, method="fast")
        with self.assertRaisesRegex(ValueError, "placement has 6 layers"):
            exflow.evaluate(np.load(EXAMPLE)[:100], p)
        with self.assertRaises(OSError):
            p.to_csv(os.path.join(os.devnull, "p.csv"))  # a file is not a directory
        with self.assertRaises(TypeError):
            exflow.solve(self.ids, gpus_per_node=4, no_such_option=1)

    def test_options_come_from_the_clis_table_with_its_checks(self):
        # The keywords are exflow solve's planning flags; the echo is the CLI's.
        p = exflow.solve(self.ids, gpus_per_node=4, method="fast", starts=1, seed=5, seq_len=4,
                         max_load_ratio=1.5, time_limit=0)
        self.assertEqual(p.metrics["status"], "converged")
        opts = p.metrics["options"]
        self.assertEqual((opts["method"], opts["starts"], opts["seed"], opts["seq_len"]), ("fast", 1, 5, 4))
        self.assertEqual(opts["max_load_ratio"], "1.5")
        with tempfile.TemporaryDirectory() as d:
            np.save(os.path.join(d, "ids.npy"), self.ids)
            cli = cli_json("solve", os.path.join(d, "ids.npy"), "--gpus-per-node", "4", "--method", "fast",
                           "--starts", "1", "--seed", "5", "--seq-len", "4", "--max-load-ratio", "1.5",
                           "--out-dir", d)
        self.assertEqual(p.metrics["cost"], cli["cost"])
        self.assertEqual(p.metrics["baseline"]["cost"], cli["baseline"]["cost"])
        self.assertEqual(p.metrics["status"], cli["status"])
        for key, value in opts.items():
            self.assertEqual(cli["options"][key], value, key)
        # Wrong types are TypeErrors naming the keyword; bad values ValueErrors naming it.
        for bad in ({"redundant": 1.5}, {"bipart": 1}, {"time_limit": "1"}, {"starts": True},
                    {"method": 3}):
            with self.assertRaisesRegex(TypeError, list(bad)[0]):
                exflow.solve(self.ids, gpus_per_node=4, **bad)
        for bad in ({"time_limit": float("nan")}, {"time_limit": -1}, {"starts": -1}, {"starts": 0},
                    {"redundant": -1}, {"sample_tokens": -5}, {"method": "best"}, {"seq_len": 0}):
            with self.assertRaisesRegex(ValueError, list(bad)[0]):
                exflow.solve(self.ids, gpus_per_node=4, **bad)

    def test_read_placement_reads_every_format_the_cli_reads(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "loc.json")
            p = exflow.solve(self.ids, gpus_per_node=4, method="fast", starts=1)
            p.to_sglang(path)
            again = exflow.read_placement(path, p.layers, p.experts, 4)
        np.testing.assert_array_equal(again.gpu_of, p.gpu_of)

    def test_profile_has_the_clis_keys(self):
        with tempfile.TemporaryDirectory() as d:
            np.save(os.path.join(d, "ids.npy"), self.ids)
            cli = cli_json("profile", os.path.join(d, "ids.npy"))
        mine = exflow.profile(self.ids)
        self.assertEqual(set(mine) | {"options"}, set(cli) | {"options"})
        self.assertEqual(mine["layer_pairs"], cli["layer_pairs"])


class Gil(unittest.TestCase):
    def test_solve_releases_the_gil(self):
        ids = np.load(EXAMPLE)[:, :, :2]
        done = threading.Event()
        result = {}

        def work():
            result["p"] = exflow.solve(ids, gpus_per_node=4, method="fast", threads=1)
            done.set()

        worker = threading.Thread(target=work)
        worker.start()
        ticks = 0
        while not done.is_set():
            ticks += 1  # Python bytecode: runs only while the solve has let go of the GIL
        worker.join()
        self.assertIn("p", result)
        self.assertGreater(ticks, 10000)


if __name__ == "__main__":
    unittest.main()
