"""`fastrnn bench`: fastrnn side by side with numpy, PyTorch, ONNX Runtime and Keras (those
installed), at the same thread count, against the machine's measured limits."""
import argparse
import os
import sys

from fastrnn.bench import suites


def _threads(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected thread counts like 1,2; got {text}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"thread counts must be positive integers, got {text}")
    return sorted(set(values))


def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def add_arguments(p, demo=False):
    """The options of `fastrnn bench` on parser `p` (`demo`: `fastrnn demo`, where --quick is
    implied)."""
    p.add_argument("--suite", default="quick-default", choices=suites.SUITE_CHOICES,
                   metavar="SUITE",
                   help="which grid: " + ", ".join(suites.SUITE_CHOICES) + " (default: "
                   "quick-default, the quick subset of every suite; all: every suite)")
    p.add_argument("--quick", action="store_true", default=demo,
                   help="implied: the demo is the quick benchmark" if demo else
                   "only the quick subset of the suite(s), fewer repeats (< 2 min)")
    p.add_argument("--threads", type=_threads, default=None, metavar="N[,N...]",
                   help="comma-separated thread counts (default: 1 and all usable cores)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="precision of weights and data: float32 (default) or float64")
    p.add_argument("--repeats", type=_positive, default=None, metavar="N",
                   help="timed repeats per implementation (default 7, --quick 5)")
    p.add_argument("--json", metavar="FILE", help="also write all results to FILE as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="also write a plot (needs matplotlib: pip install fastrnn[plot])")
    p.add_argument("--record", metavar="DIR",
                   help="also record the run in DIR: <suite>-latest.md / .json (replaced) and "
                   "one line per run appended to DIR/history.md (date, CPU, commit, geometric "
                   "mean and minimum vs the best peer per suite)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def parser(prog="fastrnn bench"):
    return add_arguments(argparse.ArgumentParser(prog=prog, description=__doc__))


def run(args, prog="fastrnn bench", error=None):
    """Run the benchmark the parsed `args` describe, print the table; returns the exit status
    (0, or 1 when a peer's output disagreed with fastrnn's or a file could not be written).
    `error(message)`: the parser's usage error (exits 2)."""
    if args.record and not os.path.isdir(args.record):
        message = f"--record {args.record}: not a folder"
        if error is not None:
            error(message)
        print(f"{prog}: {message}", file=sys.stderr)
        return 2
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):  # fail before a long run, not after it
            message = f"{flag} {path}: the folder {folder} does not exist"
            if error is not None:
                error(message)
            print(f"{prog}: {message}", file=sys.stderr)
            return 2
    if args.plot and args.suite in ("dropin", "quantized", "pipeline"):  # before matplotlib
        print(f"{prog}: --plot is not available for the {args.suite} suite", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(f"{prog}: --plot needs matplotlib: pip install fastrnn[plot]", file=sys.stderr)
            return 1
    from fastrnn.bench import runner

    if args.record:  # the code that runs: read before the run, not after it
        from fastrnn.bench import record
        args.commit = record.commit_of(os.path.dirname(os.path.abspath(__file__)))
    threads = args.threads or sorted({1, _cores()})
    repeats = args.repeats or (5 if args.quick else 7)
    if args.suite == "dropin":
        return _run_dropin(args, threads, repeats, prog)
    if args.suite == "quantized":
        return _run_quantized(args, threads, repeats, prog)
    if args.suite == "pipeline":
        from fastrnn.bench import pipeline
        if args.dtype != "float32":
            print(f"{prog}: the pipeline suite runs float32 layers (--dtype float32)",
                  file=sys.stderr)
            return 2
        return _run_own_suite(args, threads, repeats, prog, pipeline, pipeline.run_pipeline)
    cases = suites.select(args.suite, quick=args.quick)
    doc = runner.run_benchmark(cases, threads, dtype=args.dtype, repeats=repeats,
                               min_time=0.01 if args.quick else 0.02,
                               budget=2.0 if args.quick else 30.0,
                               progress=not args.no_progress,
                               settings={"suite": args.suite, "quick": args.quick})
    return _finish(doc, runner.format_table(doc), args, prog, plot=runner.write_plot)


def _run_dropin(args, threads, repeats, prog):
    """`--suite dropin`: whole PyTorch / Keras models, stock vs accelerated."""
    from fastrnn.bench import dropin
    return _run_own_suite(args, threads, repeats, prog, dropin, dropin.run_dropin,
                          dtype=args.dtype)


def _run_quantized(args, threads, repeats, prog):
    """`--suite quantized`: int8 / bf16 layers vs float32 and the peers' quantized LSTMs."""
    from fastrnn.bench import quantized
    if args.dtype != "float32":
        print(f"{prog}: the quantized suite runs float32 activations (--dtype float32)",
              file=sys.stderr)
        return 2
    return _run_own_suite(args, threads, repeats, prog, quantized, quantized.run_quantized)


def _run_own_suite(args, threads, repeats, prog, module, run, **kwargs):
    """A suite with its own cases, runner and table (module.CASES, run(...), format_table)."""
    from fastrnn.bench import runner
    n = len([c for c in module.CASES if c.quick or not args.quick]) * len(threads)
    bar = None if args.no_progress else runner.Progress(n)
    doc = run(threads, quick=args.quick, repeats=repeats,
              min_time=0.01 if args.quick else 0.02, budget=3.0 if args.quick else 30.0,
              progress=bar, **kwargs)
    if bar:
        bar.close()
    return _finish(doc, module.format_table(doc), args, prog)


def _finish(doc, table, args, prog, plot=None):
    """Print the table, write --json / --plot / --record; the exit status (1: a peer's
    output disagreed with fastrnn's, or a file could not be written)."""
    from fastrnn.bench import runner
    print(table, flush=True)
    try:
        if args.json:
            runner.write_json(doc, args.json)
        if plot and args.plot:
            plot(doc, args.plot)
        if args.record:
            from fastrnn.bench import record
            for path in record.record(doc, table, args.record, commit=args.commit):
                print(f"recorded: {path}", file=sys.stderr)
    except OSError as exc:
        print(f"{prog}: cannot write {exc.filename or args.json}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 1 if doc["failures"] else 0


def main(argv=None, prog="fastrnn bench"):
    p = parser(prog)
    return run(p.parse_args(argv), prog, error=p.error)
