"""`fastrnn bench`: fastrnn side by side with numpy, PyTorch, ONNX Runtime and Keras (those
installed), at the same thread count, against the machine's measured limits."""
import argparse
import os
import sys

from fastrnn.bench import runner, suites


def _threads(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected thread counts like 1,2; got {text!r}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"thread counts must be positive integers: {text!r}")
    return sorted(set(values))


def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parser(prog="fastrnn bench"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("--suite", default="quick-default", choices=suites.SUITE_CHOICES,
                   help="which grid (default: quick-default, the quick subset of every suite)")
    p.add_argument("--quick", action="store_true",
                   help="only the quick subset of the suite(s), fewer repeats (< 2 min)")
    p.add_argument("--threads", type=_threads, default=None,
                   help="comma-separated thread counts (default: 1 and all usable cores)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeats", type=_positive, default=None,
                   help="timed repeats per implementation (default 7, --quick 5)")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="write a plot (needs matplotlib: pip install fastrnn[plot])")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def main(argv=None, prog="fastrnn bench"):
    args = parser(prog).parse_args(argv)
    if args.plot:  # fail before a long run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(f"{prog}: --plot needs matplotlib: pip install fastrnn[plot]", file=sys.stderr)
            return 2
    cases = suites.select(args.suite, quick=args.quick)
    threads = args.threads or sorted({1, _cores()})
    repeats = args.repeats or (5 if args.quick else 7)
    doc = runner.run_benchmark(cases, threads, dtype=args.dtype, repeats=repeats,
                               min_time=0.01 if args.quick else 0.02,
                               budget=2.0 if args.quick else 30.0,
                               progress=not args.no_progress,
                               settings={"suite": args.suite, "quick": args.quick})
    print(runner.format_table(doc), flush=True)
    if args.json:
        runner.write_json(doc, args.json)
    if args.plot:
        runner.write_plot(doc, args.plot)
    return 1 if doc["failures"] else 0
