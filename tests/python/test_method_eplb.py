"""exflow.solve(ids, method="eplb"): DeepSeek's EPLB through the Python module, the same
placement as the CLI's, and the option checks as ValueError.

Runs under pytest or `python3 -m unittest`; needs PYTHONPATH to hold the built module and
EXFLOW_CLI (ctest sets them)."""
import json
import os
import subprocess
import tempfile
import unittest

import numpy as np

import exflow
from routing_ids import distinct_rows

SOURCE = os.environ.get("EXFLOW_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.environ.get("EXFLOW_CLI", os.path.join(SOURCE, "build", "bin", "exflow"))




def trace(tokens=400, layers=3, experts=16, k=2, seed=4):
    rng = np.random.default_rng(seed)
    hot = rng.zipf(1.5, size=(tokens, layers, k)) % experts  # skewed loads
    return distinct_rows(hot, experts).astype(np.int32)


class MethodEplb(unittest.TestCase):
    def test_solve_with_redundant_slots(self):
        ids = trace()
        p = exflow.solve(ids, gpus_per_node=4, nodes=2, method="eplb", redundant_total=8)
        self.assertEqual(p.metrics["method"], "eplb")
        self.assertEqual((p.layers, p.experts, p.gpus), (3, 16, 8))
        maps = p.to_eplb()
        self.assertEqual(maps["phy2log"].shape, (3, 24))
        self.assertEqual(int(maps["logcnt"].sum()), 3 * 24)
        with tempfile.TemporaryDirectory() as d:
            np.save(os.path.join(d, "ids.npy"), ids)
            out = subprocess.run(
                [CLI, "solve", os.path.join(d, "ids.npy"), "--gpus-per-node", "4", "--nodes", "2",
                 "--method", "eplb", "--redundant-total", "8", "--eplb", os.path.join(d, "m.json"),
                 "--out-dir", d, "--json", "--quiet"],
                check=True, capture_output=True, text=True)
            self.assertEqual(json.loads(out.stdout)["method"], "eplb")
            with open(os.path.join(d, "m.json")) as f:
                cli_maps = json.load(f)
        self.assertEqual(maps["phy2log"].tolist(), cli_maps["phy2log"])

    def test_expert_groups_must_divide_the_experts(self):
        with self.assertRaises(ValueError) as e:
            exflow.solve(trace(), gpus_per_node=4, method="eplb", expert_groups=5)
        self.assertIn("expert_groups", str(e.exception))


if __name__ == "__main__":
    unittest.main()
