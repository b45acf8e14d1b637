"""SGLang's .pt files (recorder dumps and --init-expert-location files) through exflow.sglang,
exflow.read_placement and `python3 -m exflow convert`, and the package's layout.

The .pt files are made here with torch.save, shaped as SGLang's recorder and init files are: a
per_token dump of int32 [layers, tokens, 8] physical ids padded with -1 (a dense layer 0 that
never routes, top-2 in 8 columns, redundant slots) with the int64 map in force, a stat dump of
int32 [steps, layers, experts] logical counts, and init files holding physical_to_logical_map or
logical_count. The torch tests skip when torch is not importable; the test of the message
without torch runs everywhere."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

import exflow

try:
    import torch
except ImportError:
    torch = None

SOURCE = os.environ.get("EXFLOW_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.environ.get("EXFLOW_CLI", os.path.join(SOURCE, "build", "bin", "exflow"))
NEEDS_TORCH = unittest.skipIf(torch is None, "torch is not importable (Debian: python3-torch)")

LAYERS, EXPERTS, GPUS, SLOTS, WIDTH, K = 4, 4, 2, 6, 8, 2  # SGLang layers incl. dense layer 0
# The map in force: 3 slots per GPU, one redundant copy per GPU (layer 0 is dense: SGLang's
# trivial map, arange % E).
P2L = np.array([[0, 1, 2, 3, 0, 1],
                [0, 1, 2, 0, 2, 3],
                [1, 2, 3, 0, 1, 3],
                [0, 1, 3, 2, 3, 0]], dtype=np.int64)


def per_token_dump(tokens_per_record=(5, 0, 7), k=K, seed=0):
    """A per_token dump's dict and the logical trace [T, 3, k] it holds."""
    rng = np.random.default_rng(seed)
    records, expected = [], []
    for i, n in enumerate(tokens_per_record):
        ids = np.full((LAYERS, n, WIDTH), -1, dtype=np.int32)
        logical = np.zeros((n, LAYERS - 1, k), dtype=np.int64)
        for layer in range(1, LAYERS):
            for t in range(n):
                chosen = rng.choice(EXPERTS, size=k, replace=False)
                logical[t, layer - 1] = chosen
                for c, e in enumerate(chosen):
                    ids[layer, t, c] = rng.choice(np.flatnonzero(P2L[layer] == e))
        count = np.zeros((LAYERS, SLOTS), dtype=np.int32)
        for layer in range(LAYERS):
            valid = ids[layer][ids[layer] >= 0]
            count[layer] = np.bincount(valid, minlength=SLOTS)
        records.append(dict(forward_pass_id=10 + i, rank=0, gatherer_key="primary",
                            input_ids=list(range(n)), positions=list(range(n)),
                            extend_seq_lens=[n] if n else None, forward_mode=1,
                            topk_ids_of_layer=torch.from_numpy(ids), misc_objects=[],
                            global_physical_count=torch.from_numpy(count)))
        expected.append(logical)
    data = dict(records=records, last_physical_to_logical_map=torch.from_numpy(P2L))
    trace = np.concatenate(expected)
    return data, (trace[:, :, 0] if k == 1 else trace)


def stat_dump():
    counts = np.arange(3 * LAYERS * EXPERTS, dtype=np.int32).reshape(3, LAYERS, EXPERTS)
    counts[:, 0] = 0  # the dense layer
    return dict(rank=0, logical_count=torch.from_numpy(counts),
                average_utilization_rate_over_window=None), counts


def run_module(*args, env=None):
    return subprocess.run([sys.executable, "-m", "exflow", *args], capture_output=True,
                          text=True, env=env)


class Package(unittest.TestCase):
    def test_layout_and_reexports(self):
        self.assertEqual(os.path.basename(os.path.dirname(exflow.__file__)), "exflow")
        self.assertTrue(exflow._native.__file__.startswith(os.path.dirname(exflow.__file__)))
        for name in ("Placement", "solve", "evaluate", "profile", "read_placement",
                     "read_sglang_dump", "SglangFile"):
            self.assertIn(name, exflow.__all__)
            self.assertTrue(callable(getattr(exflow, name)), name)

    def test_to_eplb_is_int64(self):
        p = exflow.Placement(np.array([[0, 0, 1, 1], [1, 0, 1, 0]]), 2)
        maps = p.to_eplb()
        for key in ("phy2log", "log2phy", "logcnt"):
            self.assertEqual(maps[key].dtype, np.int64, key)
        self.assertEqual(maps["phy2log"].tolist(), [[0, 1, 2, 3], [1, 3, 0, 2]])
        again = exflow._native._placement_from_phy2log(maps["phy2log"], 2)
        self.assertEqual(again.gpu_of.tolist(), p.gpu_of.tolist())

    def test_without_torch_a_pt_file_is_one_clear_line(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "dump.pt")
            with open(path, "wb") as f:
                f.write(b"not read")
            block = "import sys; sys.modules['torch'] = None; "
            api = subprocess.run([sys.executable, "-c", block + (
                "import exflow\ntry:\n    exflow.read_sglang_dump(%r)\n"
                "except ImportError as e:\n    print(e)\n") % path],
                capture_output=True, text=True)
            self.assertEqual(api.stdout.strip(),
                             f"reading {path} needs torch (Debian: apt install python3-torch)")
            cli = subprocess.run([sys.executable, "-c", block + (
                "import runpy; sys.argv = ['exflow', 'convert', %r, '-o', %r]; "
                "runpy.run_module('exflow', run_name='__main__')") % (path, path + ".npy")],
                capture_output=True, text=True)
            self.assertEqual(cli.returncode, 1)
            self.assertEqual(cli.stderr, f"exflow: error: reading {path} needs torch "
                                         "(Debian: apt install python3-torch)\n")
            self.assertFalse(os.path.exists(path + ".npy"))


@NEEDS_TORCH
class Read(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def save(self, obj, name="x.pt"):
        path = os.path.join(self.dir.name, name)
        torch.save(obj, path)
        return path

    def test_per_token_dump_is_the_logical_trace(self):
        data, expected = per_token_dump()
        f = exflow.read_sglang_dump(self.save(data))
        self.assertIsInstance(f, exflow.SglangFile)
        self.assertEqual((f.kind, f.layer_ids, f.experts, f.records), ("trace", (1, 2, 3), 4, 2))
        self.assertEqual(f.array.dtype, np.int16)
        self.assertEqual(f.array.shape, (12, 3, 2))
        self.assertEqual(f.array.tolist(), expected.tolist())
        self.assertEqual(f.summary()["tokens"], 12)
        # The trace goes straight into the solver.
        self.assertEqual(exflow.profile(f.array, experts=4)["tokens"], 12)

    def test_top1_dump_is_a_two_dimensional_trace(self):
        data, expected = per_token_dump(k=1, seed=3)
        f = exflow.read_sglang_dump(self.save(data))
        self.assertEqual(f.array.shape, (12, 3))
        self.assertEqual(f.array.tolist(), expected.tolist())

    def test_stat_dump_is_the_loads_summed_over_steps(self):
        data, counts = stat_dump()
        f = exflow.read_sglang_dump(self.save(data))
        self.assertEqual((f.kind, f.layer_ids, f.experts), ("loads", (0, 1, 2, 3), 4))
        self.assertEqual(f.array.dtype, np.int64)
        self.assertEqual(f.array.tolist(), counts.sum(axis=0).tolist())

    def test_init_files(self):
        f = exflow.read_sglang_dump(self.save({"physical_to_logical_map": torch.from_numpy(P2L)}))
        self.assertEqual((f.kind, f.experts), ("physical_to_logical_map", 4))
        self.assertEqual(f.array.tolist(), P2L.tolist())
        counts = torch.tensor([[3, 1, 4, 1], [5, 9, 2, 6]])
        f = exflow.read_sglang_dump(self.save({"logical_count": counts}))
        self.assertEqual((f.kind, f.array.tolist()), ("loads", counts.tolist()))

    def test_read_placement_from_an_init_file(self):
        path = self.save({"physical_to_logical_map": torch.from_numpy(P2L)}, "init.pt")
        p = exflow.read_placement(path, LAYERS, EXPERTS, 2)
        self.assertEqual(p.gpu_of.tolist(), [[0, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0],
                                             [0, 0, 1, 0]])
        self.assertEqual(sorted(p.replicas), [(0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 2, 1),
                                              (2, 1, 1), (2, 3, 1), (3, 0, 1), (3, 3, 1)])
        self.assertEqual(p.to_eplb()["logcnt"].sum(axis=1).tolist(), [SLOTS] * LAYERS)
        with self.assertRaisesRegex(ValueError, "placement has 4 layers x 4 experts, the trace 3 x 4"):
            exflow.read_placement(path, 3, EXPERTS, 2)
        with self.assertRaisesRegex(ValueError, "not a physical_to_logical_map"):
            exflow.read_placement(self.save(stat_dump()[0], "stat.pt"), LAYERS, EXPERTS, 2)

    def test_bad_files_are_one_line_value_errors(self):
        data, _ = per_token_dump()
        data["records"][2]["topk_ids_of_layer"][2, 4, 1] = -1
        cases = [
            ([1, 2], "holds a list, expected a dict"),
            ({"records": []}, "needs 'last_physical_to_logical_map'"),
            ({"other": 1}, "not an SGLang recorder dump or init file"),
            (data, "record 2: SGLang layer 2 token 4 column 1 is -1 inside the top-2"),
            ({"records": [{"topk_ids_of_layer": torch.zeros(4, 3, dtype=torch.int32)}],
              "last_physical_to_logical_map": torch.from_numpy(P2L)},
             r"record 0: topk_ids_of_layer has shape \[4, 3\], expected \[4, tokens, k\]"),
            ({"records": [{"topk_ids_of_layer": torch.full((4, 2, 8), 6, dtype=torch.int32)}],
              "last_physical_to_logical_map": torch.from_numpy(P2L)},
             "token 0 column 0 is physical id 6, outside 0..5"),
            ({"records": [{"topk_ids_of_layer": torch.zeros(4, 0, 8, dtype=torch.int32)},
                          {"topk_ids_of_layer": torch.zeros(4, 1, 4, dtype=torch.int32)}],
              "last_physical_to_logical_map": torch.from_numpy(P2L)},
             "record 1: topk_ids_of_layer has 4 columns, record 0 8"),
            ({"records": [{"global_physical_count": torch.zeros(4, 6)}],
              "last_physical_to_logical_map": torch.from_numpy(P2L)},
             "record 0 has no topk_ids_of_layer"),
            ({"records": [{"topk_ids_of_layer": torch.full((4, 2, 8), -1, dtype=torch.int32)}],
              "last_physical_to_logical_map": torch.from_numpy(P2L)},
             "every expert id is -1"),
            ({"logical_count": torch.zeros(4, dtype=torch.int64)}, r"got shape \[4\]"),
            ({"logical_count": torch.tensor([[1, -2]])}, "step 0 layer 0 expert 1 is -2"),
            ({"logical_count": torch.zeros(2, 3)}, "must hold integers, got dtype float32"),
            ({"physical_to_logical_map": torch.tensor([[0, -1, 1]])},
             "physical_to_logical_map layer 0 slot 1 is -1"),
            ({"physical_to_logical_map": torch.tensor([[0, 2, 2, 0]])},
             "layer 0 has no slot for expert 1"),
        ]
        for i, (obj, message) in enumerate(cases):
            path = self.save(obj, f"bad{i}.pt")
            with self.assertRaisesRegex(ValueError, message) as e:
                exflow.read_sglang_dump(path)
            self.assertNotIn("\n", str(e.exception))
            self.assertTrue(str(e.exception).startswith(path + ": "), str(e.exception))
        with open(os.path.join(self.dir.name, "text.pt"), "w") as f:
            f.write("not a torch file\n")
        with self.assertRaisesRegex(ValueError, "not a torch.save file"):
            exflow.read_sglang_dump(os.path.join(self.dir.name, "text.pt"))
        with self.assertRaises(OSError):
            exflow.read_sglang_dump(os.path.join(self.dir.name, "missing.pt"))


@NEEDS_TORCH
class Convert(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.d = self.dir.name

    def save(self, obj, name):
        path = os.path.join(self.d, name)
        torch.save(obj, path)
        return path

    def test_per_token_to_trace_npy(self):
        data, expected = per_token_dump()
        dump = self.save(data, "expert_distribution_recorder_1.0_0.pt")
        out = os.path.join(self.d, "trace.npy")
        r = run_module("convert", dump, "-o", out, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        summary = json.loads(r.stdout)
        self.assertEqual({k: summary[k] for k in ("kind", "tokens", "layers", "k", "dtype",
                                                   "sglang_layers", "output")},
                         {"kind": "trace", "tokens": 12, "layers": 3, "k": 2, "dtype": "<i2",
                          "sglang_layers": [1, 2, 3], "output": out})
        self.assertEqual(np.load(out).tolist(), expected.tolist())
        self.assertEqual(sorted(os.listdir(self.d)), ["expert_distribution_recorder_1.0_0.pt",
                                                      "trace.npy"])  # no temporary file left
        # The exflow CLI reads it as a trace.
        cli = subprocess.run([CLI, "profile", out, "--json"], capture_output=True, text=True)
        self.assertEqual(cli.returncode, 0, cli.stderr)
        self.assertEqual(json.loads(cli.stdout)["tokens"], 12)

    def test_stat_to_loads_json_and_init_to_expert_location(self):
        data, counts = stat_dump()
        out = os.path.join(self.d, "loads.json")
        r = run_module("convert", self.save(data, "stat.pt"), "-o", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("loads of 4 layers x 4 experts", r.stdout)
        with open(out) as f:
            self.assertEqual(json.load(f), {"logical_count": counts.sum(axis=0).tolist()})
        cli = subprocess.run([CLI, "solve", "--expert-loads", out, "--gpus-per-node", "2",
                              "--out-dir", self.d, "--json", "--quiet"],
                             capture_output=True, text=True)
        self.assertEqual(cli.returncode, 0, cli.stderr)

        init = self.save({"physical_to_logical_map": torch.from_numpy(P2L)}, "init.pt")
        loc = os.path.join(self.d, "expert-location.json")
        r = run_module("convert", init, "-o", loc)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(loc) as f:
            self.assertEqual(json.load(f), {"physical_to_logical_map": P2L.tolist()})
        a = exflow.read_placement(loc, LAYERS, EXPERTS, 2)
        b = exflow.read_placement(init, LAYERS, EXPERTS, 2)
        self.assertEqual((a.gpu_of.tolist(), sorted(a.replicas)),
                         (b.gpu_of.tolist(), sorted(b.replicas)))

    def test_errors_are_one_line_with_exit_codes(self):
        data, _ = per_token_dump()
        dump = self.save(data, "dump.pt")
        bad = dict(data)
        bad["records"] = [dict(r) for r in data["records"]]
        ids = bad["records"][0]["topk_ids_of_layer"].clone()
        ids[3, 1, 0] = -1
        bad["records"][0]["topk_ids_of_layer"] = ids
        cases = [
            (self.save([1, 2, 3], "list.pt"), "out.npy", 1, "holds a list, expected a dict"),
            (self.save({"records": []}, "keys.pt"), "out.npy", 1,
             "needs 'last_physical_to_logical_map'"),
            (self.save({"records": [{"topk_ids_of_layer": torch.zeros(2, 1, 8, dtype=torch.int32)}],
                        "last_physical_to_logical_map": torch.from_numpy(P2L)}, "shape.pt"),
             "out.npy", 1, "record 0: topk_ids_of_layer has shape [2, 1, 8], expected [4, tokens, k]"),
            (self.save(bad, "pad.pt"), "out.npy", 1,
             "record 0: SGLang layer 3 token 1 column 0 is -1 inside the top-2"),
            (dump, "out.json", 2, "holds trace; a per_token dump converts to a trace .npy"),
            (dump, "out.csv", 2, "the output must be a .npy or .json file"),
            (os.path.join(self.d, "log.jsonl"), "out.npy", 2, "reads SGLang .pt files"),
            (os.path.join(self.d, "missing.pt"), "out.npy", 1, "cannot read"),
            (dump, os.path.join("no-such-dir", "out.npy"), 1, "out.npy: cannot write"),
        ]
        for source, output, code, message in cases:
            out = os.path.join(self.d, output)
            r = run_module("convert", source, "-o", out)
            self.assertEqual(r.returncode, code, (source, r.stderr))
            self.assertEqual(r.stdout, "")
            self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
            self.assertTrue(r.stderr.startswith("exflow: error: "), r.stderr)
            self.assertIn(message, r.stderr)
            self.assertFalse(os.path.exists(out))
        r = run_module("convert", dump)
        self.assertEqual((r.returncode, r.stderr.count("\n")), (2, 1), r.stderr)
        self.assertNotIn("Traceback", r.stderr)


if __name__ == "__main__":
    unittest.main()
