"""Top-k ids as a router writes them, for the Python tests: k distinct experts per row."""
import numpy as np


def distinct_rows(ids, experts):
    """Each repeated expert of a top-k row moved to the next expert the row lacks: a router
    names k distinct experts, and exflow refuses a row that repeats one."""
    out = np.ascontiguousarray(ids).copy()
    for row in out.reshape(-1, out.shape[-1]):
        seen = set()
        for c in range(row.shape[0]):
            e = int(row[c])
            while e in seen:
                e = (e + 1) % experts
            row[c] = e
            seen.add(e)
    return out
