#!/usr/bin/env python3
"""Writes the .npy fixtures used by tests/npy_test.cpp into this directory.

Plain Python 3, standard library only (numpy is not needed). The output is deterministic:
run `python3 tests/data/npy/make_fixtures.py` after changing a case and commit the files.

Most fixtures are a well-formed trace with exactly one defect; valid_*.npy are well-formed
controls whose ids follow value() below (the tests use the same formula).
"""

import os
import pickle
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC = b"\x93NUMPY"

# struct codes for the integer dtypes the fixtures use.
CODES = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "i8": "q", "u8": "Q"}


def value(t, l, c=0):
    """The id of token t, layer l, column c in the valid_*.npy fixtures."""
    return (t * 5 + l * 3 + c * 11) % 13


def shape_text(shape):
    if len(shape) == 1:
        return "(%d,)" % shape[0]
    return "(" + ", ".join(str(d) for d in shape) + ")"


def dict_text(descr, fortran, shape):
    return "{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (
        descr if descr.startswith("[") else "'%s'" % descr,
        "True" if fortran else "False",
        shape_text(shape),
    )


def header(text, version=(1, 0), header_len=None, total=None):
    """Magic, version, length field and the padded, newline-terminated header dict.

    The dict is padded with spaces so that the data starts at a multiple of 64 bytes (or so
    that the header block is `total` bytes long); `header_len` overrides the length field.
    """
    len_bytes = 2 if version[0] == 1 else 4
    prefix = len(MAGIC) + 2 + len_bytes
    body = text.encode("latin-1")
    size = total if total is not None else (prefix + len(body) + 1 + 63) // 64 * 64
    body += b" " * (size - prefix - len(body) - 1) + b"\n"
    field = len(body) if header_len is None else header_len
    fmt = "<H" if len_bytes == 2 else "<I"
    return MAGIC + bytes(version) + struct.pack(fmt, field) + body


def pack(descr, values):
    """Packs ints (already in storage order) with a numpy integer descr such as '<i4'."""
    order = "<" if descr[0] in "<|" else ">"
    return struct.pack(order + CODES[descr[1:]] * len(values), *values)


def c_order(shape, fn):
    if len(shape) == 2:
        return [fn(t, l) for t in range(shape[0]) for l in range(shape[1])]
    return [fn(t, l, c) for t in range(shape[0]) for l in range(shape[1]) for c in range(shape[2])]


def f_order(shape, fn):
    if len(shape) == 2:
        return [fn(t, l) for l in range(shape[1]) for t in range(shape[0])]
    return [fn(t, l, c) for c in range(shape[2]) for l in range(shape[1]) for t in range(shape[0])]


def npy(descr, shape, values, fortran=False, version=(1, 0)):
    return header(dict_text(descr, fortran, shape), version) + pack(descr, values)


def fixtures():
    valid = npy("<i4", (4, 3), c_order((4, 3), value))
    small = npy("|u1", (4, 3), c_order((4, 3), value))
    small_header = header(dict_text("|u1", False, (4, 3)))
    small_data = pack("|u1", c_order((4, 3), value))
    out = {}

    # Well-formed controls.
    out["valid_i4.npy"] = valid
    out["valid_u2_be_fortran_v2.npy"] = npy(
        ">u2", (5, 3, 2), f_order((5, 3, 2), value), fortran=True, version=(2, 0))

    # Not an npy file at all / broken preamble.
    out["not_npy.csv"] = b"token,layer0,layer1,layer2\n0,3,1,2\n1,0,2,5\n"
    out["empty.npy"] = b""
    out["bad_magic.npy"] = b"\x93NUMPX" + valid[6:]
    out["version_4_0.npy"] = header(dict_text("<i4", False, (4, 3)), (4, 0)) + valid[128:]
    out["truncated_prefix.npy"] = valid[:9]
    out["truncated_header.npy"] = valid[:40]

    # The header length field lies.
    real = len(small_header) - 10
    out["header_len_too_long.npy"] = header(
        dict_text("|u1", False, (4, 3)), header_len=real + 4) + small_data
    out["header_len_too_short.npy"] = header(
        dict_text("|u1", False, (4, 3)), header_len=real - 10) + small_data
    out["header_len_past_eof.npy"] = header(
        dict_text("|u1", False, (4, 3)), header_len=0xFFFF) + small_data

    # Header dictionary defects.
    out["missing_shape.npy"] = header("{'descr': '<i4', 'fortran_order': False, }") + valid[128:]
    out["malformed_dict.npy"] = header(
        "{'descr': '<i4', 'fortran_order': False 'shape': (4, 3), }") + valid[128:]
    out["wrong_type.npy"] = header(
        "{'descr': '<i4', 'fortran_order': 0, 'shape': (4, 3), }") + valid[128:]
    # The shape tuple never closes and the header block ends exactly at a page boundary (the
    # file is 4096 bytes), so a parser that reads one byte past the header would fault.
    out["unterminated_shape.npy"] = header(
        "{'descr': '<i4', 'fortran_order': False, 'shape': (4, ", total=4096)
    out["huge_dim.npy"] = header(dict_text("<i4", False, (10 ** 20, 3)))

    # Dtypes that are not plain integers.
    out["float32.npy"] = header(dict_text("<f4", False, (2, 3))) + struct.pack("<6f", *range(6))
    out["float64.npy"] = header(dict_text("<f8", False, (2, 3))) + struct.pack("<6d", *range(6))
    out["bool.npy"] = header(dict_text("|b1", False, (2, 3))) + bytes([0, 1, 1, 0, 1, 0])
    out["object.npy"] = header(dict_text("|O", False, (2, 2))) + pickle.dumps(
        [[0, 1], [2, 3]], protocol=2)
    out["structured.npy"] = header(dict_text(
        "[('expert', '<i4'), ('score', '<f4')]", False, (3, 2))) + bytes(48)
    out["string.npy"] = header(dict_text("<U2", False, (2, 2))) + bytes(32)

    # Shapes that are not [tokens, layers] or [tokens, layers, k].
    out["shape_1d.npy"] = npy("<i4", (6,), list(range(6)))
    out["shape_4d.npy"] = npy("<i4", (2, 3, 2, 2), [0] * 24)
    out["zero_tokens.npy"] = header(dict_text("<i4", False, (0, 3)))
    out["zero_layers.npy"] = header(dict_text("<i4", False, (5, 0)))
    out["zero_k.npy"] = header(dict_text("<i4", False, (5, 3, 0)))
    out["negative_dim.npy"] = header(dict_text("<i4", False, (-1, 3)))
    out["k_too_large.npy"] = npy("|u1", (2, 2, 65), [0] * 260)
    out["shape_overflow.npy"] = header(dict_text("<i4", False, (2 ** 33, 2 ** 31)))

    # Data size does not match the shape.
    out["truncated_data.npy"] = valid[:-8]
    out["trailing_garbage.npy"] = small + b"GARBAGE!"

    # Ids out of range: -1 at token 3, layer 1 (and a later -7 that must not be the one
    # reported); 8 at token 2, layer 3, column 1 (and a larger 11 later), for --experts 8.
    ids = c_order((5, 3), lambda t, l: value(t, l) % 8)
    ids[3 * 3 + 1] = -1
    ids[4 * 3 + 2] = -7
    out["negative_id.npy"] = npy("<i2", (5, 3), ids)
    ids = c_order((6, 4, 2), lambda t, l, c: value(t, l, c) % 8)
    ids[(2 * 4 + 3) * 2 + 1] = 8
    ids[(5 * 4 + 0) * 2 + 0] = 11
    out["id_beyond_experts.npy"] = npy("<i4", (6, 4, 2), ids)
    return out


def main():
    for name, data in sorted(fixtures().items()):
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
        print("%-32s %6d bytes" % (name, len(data)))


if __name__ == "__main__":
    main()
