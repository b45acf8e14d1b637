"""The module's edges: arguments of the wrong dtype or out of range are refused with a message
naming them, a thread writing the ids during a call cannot crash the interpreter, Ctrl-C stops a
long call with KeyboardInterrupt, and an error message is never lost to its bytes.

Runs under pytest or `python3 -m unittest` (ctest sets PYTHONPATH)."""
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

import numpy as np

import exflow

VANILLA = np.tile(np.arange(64) // 16, (26, 1))  # 26 layers x 64 experts on 4 GPUs


def ids_for_tests(tokens=500):
    return np.random.default_rng(3).integers(0, 64, (tokens, 26, 1)).astype(np.int32)


def run_python(code, timeout=120):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env)


class Dtypes(unittest.TestCase):
    def test_placement_of_floats_bools_or_strings_is_a_type_error(self):
        for bad, dtype in ((VANILLA + 0.7, "float64"), (VANILLA.astype(np.float32), "float32"),
                           (VANILLA > 0, "bool"), (VANILLA.astype(str), "<U"),
                           (VANILLA.astype(object), "object")):
            with self.assertRaisesRegex(TypeError,
                                        f"gpu_of must be an integer array, got dtype {dtype}"):
                exflow.Placement(bad, gpus_per_node=4)
        self.assertEqual(exflow.Placement(VANILLA.tolist(), gpus_per_node=4).gpus, 4)

    def test_ids_of_floats_bools_or_strings_are_a_type_error(self):
        ids = ids_for_tests()
        for bad, dtype in ((ids.astype(np.float64), "float64"), (ids > 0, "bool"),
                           (ids.astype(str), "<U"), (ids.astype(object), "object"),
                           ((ids + 0.5).tolist(), "float64")):
            for call in (lambda: exflow.profile(bad), lambda: exflow.solve(bad, gpus_per_node=4),
                         lambda: exflow.evaluate(bad, exflow.Placement(VANILLA, 4))):
                with self.assertRaisesRegex(TypeError,
                                            f"ids must be an integer array, got dtype {dtype}"):
                    call()

    def test_previous_and_phy2log_of_floats_are_a_type_error(self):
        ids = ids_for_tests()
        phy2log = np.tile(np.arange(64), (26, 1))
        with self.assertRaisesRegex(TypeError,
                                    "previous must be an integer array, got dtype float64"):
            exflow.solve(ids, gpus_per_node=4, previous=phy2log + 0.5)
        with self.assertRaisesRegex(TypeError, "got dtype float64"):
            exflow._native._placement_from_phy2log(phy2log + 0.5, 4)


class Ranges(unittest.TestCase):
    def test_negative_or_nan_limits_threads_and_starts_name_the_keyword(self):
        ids = ids_for_tests()
        for keywords, name in (({"time_limit": -1}, "time_limit"),
                               ({"time_limit": float("nan")}, "time_limit"),
                               ({"token_time_limit": float("nan")}, "token_time_limit"),
                               ({"token_time_limit": -0.5}, "token_time_limit"),
                               ({"threads": -1}, "threads"), ({"threads": 5000}, "threads"),
                               ({"starts": -1}, "starts")):
            with self.assertRaisesRegex(ValueError, name):
                exflow.solve(ids, gpus_per_node=4, **keywords)
        with self.assertRaisesRegex(ValueError, "threads"):
            exflow.profile(ids, threads=-1)
        with self.assertRaisesRegex(ValueError, "threads"):
            exflow.evaluate(ids, exflow.Placement(VANILLA, 4), threads=-1)

    def test_a_path_with_a_nul_byte_is_refused_and_nothing_is_written(self):
        p = exflow.Placement(VANILLA, 4)
        with tempfile.TemporaryDirectory() as d:
            cut = os.path.join(d, "a")
            for write in (p.to_csv, p.to_sglang, p.to_vllm_ascend):
                with self.assertRaisesRegex(ValueError, "path contains a NUL byte"):
                    write(cut + "\0b.json")
            with self.assertRaisesRegex(ValueError, "path contains a NUL byte"):
                exflow.read_placement(cut + "\0b.csv", 26, 64, 4)
            self.assertEqual(os.listdir(d), [])


    def test_a_pipe_is_not_replaced_by_a_placement_file(self):
        p = exflow.Placement(VANILLA, 4)
        with tempfile.TemporaryDirectory() as d:
            pipe = os.path.join(d, "p.csv")
            os.mkfifo(pipe)
            with self.assertRaisesRegex(OSError, "not a regular file"):
                p.to_csv(pipe)
            self.assertEqual(os.listdir(d), ["p.csv"])
            self.assertFalse(os.path.isfile(pipe))


class ConcurrentWriters(unittest.TestCase):
    def test_a_thread_writing_the_ids_during_calls_cannot_crash_the_interpreter(self):
        # The writer flips the ids between valid ones and ids far outside the 64 experts; every
        # call sees one consistent copy: it succeeds or raises ValueError, never crashes.
        r = run_python("""
            import threading
            import numpy as np
            import exflow
            ids = np.zeros((200_000, 8), np.int16)
            stop = False
            def write():
                while not stop:
                    ids[:] = 30000
                    ids[:] = np.arange(8) * 7
            writer = threading.Thread(target=write)
            writer.start()
            outcomes = set()
            try:
                for i in range(12):
                    for call in (lambda: exflow.profile(ids, experts=64, threads=2),
                                 lambda: exflow.solve(ids, experts=64, gpus_per_node=8, threads=2,
                                                      method="vanilla")):
                        try:
                            call()
                            outcomes.add("ok")
                        except ValueError as e:
                            assert "out of range" in str(e) or "expert id" in str(e), e
                            outcomes.add("refused")
            finally:
                stop = True
                writer.join()
            print(sorted(outcomes))
            """)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])


class Interrupts(unittest.TestCase):
    def interrupted(self, call):
        # A long call in a child; SIGINT one second in; the child reports how long after the
        # start the call ended and how.
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
            import sys, time
            import numpy as np
            import exflow
            # Top-8 rows of distinct experts: a random first one, then every 8th after it.
            first = np.random.default_rng(0).integers(0, 64, (1_000_000, 8, 1))
            ids = np.mod(first + 8 * np.arange(8), 64).astype(np.int16)
            P = exflow.Placement(np.tile(np.arange(64) // 8, (8, 1)), gpus_per_node=8)
            print("started", flush=True)
            start = time.monotonic()
            try:
                %s
                print("finished", time.monotonic() - start, flush=True)
            except KeyboardInterrupt:
                print("interrupted", time.monotonic() - start, flush=True)
            """ % call)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.assertEqual(child.stdout.readline().strip(), "started")
            time.sleep(1.0)
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=300)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        self.assertEqual(child.returncode, 0, err[-2000:])
        how, seconds = out.split()
        self.assertEqual(how, "interrupted", out)
        # Uninterrupted the call takes over 15 s (Release); interrupted it ends within seconds.
        self.assertLess(float(seconds), 8.0)

    def test_ctrl_c_interrupts_a_long_evaluate(self):
        self.interrupted("exflow.evaluate(ids, P, threads=2)")

    def test_ctrl_c_interrupts_a_long_solve(self):
        self.interrupted("exflow.solve(ids, gpus_per_node=8, threads=2, method='vanilla')")


class ConvertOutput(unittest.TestCase):
    def test_an_unwritable_output_is_refused_before_the_input_is_read(self):
        with tempfile.TemporaryDirectory() as d:
            dump = os.path.join(d, "dump.pt")
            with open(dump, "wb") as f:
                f.write(b"not a torch file")
            os.mkdir(os.path.join(d, "dir.npy"))
            for output, fragment in ((os.path.join(d, "missing", "t.npy"), "does not exist"),
                                     (os.path.join(d, "dir.npy"), "not a regular file")):
                r = subprocess.run([sys.executable, "-m", "exflow", "convert", dump, "-o", output],
                                   capture_output=True, text=True, timeout=120)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
                self.assertIn(output + ": cannot write", r.stderr)
                self.assertIn(fragment, r.stderr)
            self.assertEqual(sorted(os.listdir(d)), ["dir.npy", "dump.pt"])


    def test_a_signal_during_the_write_leaves_no_temporary_and_kills_the_process(self):
        for name in ("SIGTERM", "SIGINT", "SIGHUP"):
            with tempfile.TemporaryDirectory() as d:
                r = run_python(f"""
                    import os, signal, time
                    from exflow.__main__ import temporaries_removed_on_signals, write_atomically
                    def write(f):
                        f.write(b"partial")
                        f.flush()
                        os.kill(os.getpid(), signal.{name})
                        time.sleep(30)
                    with temporaries_removed_on_signals():
                        write_atomically({os.path.join(d, "out.npy")!r}, write)
                    """)
                self.assertEqual(r.returncode, -getattr(signal, name), r.stderr[-2000:])
                self.assertEqual(os.listdir(d), [])


class Messages(unittest.TestCase):
    def test_a_message_quoting_bytes_that_are_not_utf8_is_not_lost(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "p.json")
            with open(path, "wb") as f:
                f.write(b'{"physical_to_logical_map": [[0, 1, "\xff"]]}')
            with self.assertRaises(ValueError) as caught:
                exflow.read_placement(path, 1, 4, 2)
            self.assertIn(path, str(caught.exception))
            self.assertIn("not valid JSON", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
