"""python3 -m exflow convert IN.pt -o OUT [--json]: SGLang's `.pt` files as exflow's inputs.

A per_token recorder dump becomes a trace .npy, a stat dump (or an init file holding
logical_count) the loads JSON `exflow solve --expert-loads` reads ({"logical_count": [...]};
.npy also works), an init file holding physical_to_logical_map SGLang's expert-location JSON.
Outputs are written atomically (a signal removes the temporary). Errors: one line on stderr,
exit 1 for bad input, 2 for usage.
"""
import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile

import numpy as np

from .sglang import read_sglang_dump

PROG = "python3 -m exflow"

# Output extensions each kind converts to.
OUTPUTS = {"trace": (".npy",), "loads": (".json", ".npy"), "physical_to_logical_map": (".json",)}
WHAT = {"trace": "a per_token dump converts to a trace .npy",
        "loads": "logical_count converts to loads .json or .npy",
        "physical_to_logical_map": "physical_to_logical_map converts to SGLang's expert-location .json"}


class UsageError(Exception):
    pass


class Terminated(BaseException):
    """Raised by SIGTERM, SIGHUP or SIGQUIT so that a write in progress removes its temporary."""

    def __init__(self, signal_number):
        super().__init__(signal_number)
        self.signal_number = signal_number


def raise_terminated(signal_number, frame):
    raise Terminated(signal_number)


@contextlib.contextmanager
def temporaries_removed_on_signals():
    """Within it, SIGINT (KeyboardInterrupt), SIGTERM, SIGHUP and SIGQUIT unwind the code, so that
    write_atomically removes its temporary; then the process dies of the signal as it would
    have."""
    handled = [s for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
               if signal.getsignal(s) == signal.SIG_DFL]
    for s in handled:
        signal.signal(s, raise_terminated)
    try:
        yield
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        raise
    except Terminated as e:
        signal.signal(e.signal_number, signal.SIG_DFL)
        os.kill(os.getpid(), e.signal_number)
        raise
    finally:
        for s in handled:
            signal.signal(s, signal.SIG_DFL)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def write_atomically(path, write):
    """Calls write(file) on a temporary file next to `path`, then renames it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp")
    except OSError as e:
        raise OSError(f"{path}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OSError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def check_writable(path):
    """Raises OSError unless write_atomically can write `path`: its directory exists and takes a
    new entry, and `path`, if it exists, is a regular file."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path) and not os.path.isfile(path):
        raise OSError(f"{path}: cannot write, it is not a regular file")
    if not os.path.isdir(directory):
        raise OSError(f"{path}: cannot write, directory {directory} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                     suffix=".tmp")
    except OSError as e:
        raise OSError(f"{path}: cannot write ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def rows_json(key, array):
    rows = ",\n  ".join(json.dumps(row) for row in array.tolist())
    return ('{"%s": [\n  %s\n]}\n' % (key, rows)).encode()


def convert(args):
    if not args.input.lower().endswith(".pt"):
        raise UsageError(f"{args.input}: {PROG} convert reads SGLang .pt files "
                         "(JSONL routing logs: exflow convert)")
    ext = os.path.splitext(args.output)[1].lower()
    if ext not in (".npy", ".json"):
        raise UsageError(f"the output must be a .npy or .json file: {args.output}")
    check_writable(args.output)
    f = read_sglang_dump(args.input)
    if ext not in OUTPUTS[f.kind]:
        raise UsageError(f"{args.output}: {args.input} holds {f.kind}; {WHAT[f.kind]}")
    if ext == ".npy":
        write_atomically(args.output, lambda out: np.save(out, f.array))
    else:
        key = "logical_count" if f.kind == "loads" else "physical_to_logical_map"
        write_atomically(args.output, lambda out: out.write(rows_json(key, f.array)))
    summary = {"output": args.output, **f.summary()}
    if args.json:
        print(json.dumps(summary, indent=2))
    elif f.kind == "trace":
        print(f"wrote {args.output}: {summary['tokens']} tokens x {f.layers} layers x "
              f"top-{summary['k']} ({f.array.dtype}) from {f.records} records; exflow layer i is "
              f"SGLang layer {list(f.layer_ids)}[i]")
    elif f.kind == "loads":
        print(f"wrote {args.output}: loads of {f.layers} layers x {f.experts} experts "
              f"({summary['total']} routed tokens)")
    else:
        print(f"wrote {args.output}: physical_to_logical_map of {f.layers} layers x "
              f"{summary['slots']} slots, {f.experts} experts")
    return 0


def main(argv=None):
    parser = Parser(prog=PROG, description="exflow's Python tools: SGLang .pt files as exflow inputs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("convert", help="convert an SGLang recorder dump or init .pt file",
                       description=__doc__.split("\n\n")[1])
    c.add_argument("input", metavar="IN.pt", help="SGLang recorder dump or init file")
    c.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="trace .npy (per_token), loads .json/.npy (logical_count) or "
                        "expert-location .json (physical_to_logical_map)")
    c.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError("a command is required: convert")
        with temporaries_removed_on_signals():
            return convert(args)
    except UsageError as e:
        print(f"exflow: error: {e} (see --help)", file=sys.stderr)
        return 2
    except (ValueError, OSError, ImportError) as e:
        print("exflow: error: " + " ".join(str(e).split("\n")), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
