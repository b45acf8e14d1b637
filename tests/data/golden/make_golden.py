#!/usr/bin/env python3
"""Writes the golden end-to-end inputs (standard library only, no numpy).

mini-2x2.npy: int16 [2 tokens, 4 layers], 4 experts, for 2 nodes x 2 GPUs.
  token 0: experts 0 1 2 3      token 1: experts 0 0 3 2
placement-affine.csv: a placement that keeps token 0 on GPU 0 and token 1 on GPU 1 after
its first move. Expected objectives (computed by hand in tests/cli_test.cpp) are asserted by
the tests, not stored here.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write_npy(path, rows, descr="<i2"):
    shape = (len(rows), len(rows[0]))
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d), }" % (descr, *shape)
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * (pad % 64) + "\n"
    data = b"".join(struct.pack("<h", v) for row in rows for v in row)
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data)


write_npy(os.path.join(HERE, "mini-2x2.npy"), [[0, 1, 2, 3], [0, 0, 3, 2]])

# GPU of expert e at each layer (global GPU ids 0..3; GPUs 0, 1 on node 0).
affine = [
    [0, 1, 2, 3],  # layer 0
    [1, 0, 2, 3],  # layer 1: expert 1 -> GPU 0, expert 0 -> GPU 1
    [2, 3, 0, 1],  # layer 2: expert 2 -> GPU 0, expert 3 -> GPU 1
    [2, 3, 1, 0],  # layer 3: expert 3 -> GPU 0, expert 2 -> GPU 1
]
with open(os.path.join(HERE, "placement-affine.csv"), "w") as f:
    f.write("Expert,Node\n")
    for layer, gpus in enumerate(affine):
        for expert, gpu in enumerate(gpus):
            f.write("%d,%d\n" % (layer * 4 + expert, gpu))
