"""The `fastrnn` command (also `python -m fastrnn`): `fastrnn bench`, `fastrnn demo`,
`fastrnn config`, `fastrnn inspect FILE`, `fastrnn convert FILE -o OUT`,
`fastrnn predict MODEL INPUT -o OUTPUT`.

Exit status: 0 on success, 1 when the work failed (a file that cannot be read or written, a
benchmark peer that disagreed), 2 for a command line that is wrong (argparse's convention).
"""
import argparse
import os
import re
import sys

COMMANDS = ("bench", "demo", "config", "inspect", "convert", "predict")
# Library messages as the command line words them: keyword arguments become flags
_CLI_WORDING = ((re.compile(r"\bname=(\.\.\.)?(?![\w'\"])"), "--name NAME"),
                (re.compile(r"\bformat=(\.\.\.)?(?![\w'\"])"), "--format FORMAT"),
                (re.compile(r"\bsequence_lens=True\b"), "--sequence-lens"),
                (re.compile(r"\bresume=True\b"), "--resume"),
                (re.compile(r"\bcolumn=\.\.\."), "--column COLUMN"),
                # a Python-only way out, which the command line does not have
                (re.compile(r",? or load them all with fastrnn\.load_all\(\)"), ""),
                # a Python list of names, ['enc', 'dec'], as the list it is: enc, dec
                (re.compile(r"\[((?:'[^'\]]*'(?:, )?)+)\]"),
                 lambda m: m.group(1).replace("'", "")))


def build_parser():
    """The argument parser of the `fastrnn` command, one subparser per command."""
    from . import __version__, io
    from .bench import cli as bench_cli

    parser = argparse.ArgumentParser(
        prog="fastrnn", description="fastrnn: fast, faithful masked LSTM and GRU kernels for "
        "CPUs. Benchmarks, build configuration, and weight files of PyTorch, Keras, ONNX, "
        "TensorFlow 1 and fastrnn's own formats.",
        epilog="`fastrnn COMMAND --help` describes a command's options.")
    parser.add_argument("--version", action="version", version=f"fastrnn {__version__}",
                        help="print the version and exit")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    bench = commands.add_parser(
        "bench", help="time fastrnn against numpy, PyTorch, ONNX Runtime and Keras (those "
        "installed) and the machine's limits", description=bench_cli.__doc__)
    bench_cli.add_arguments(bench)
    demo = commands.add_parser(
        "demo", help="a short benchmark: the same as `fastrnn bench --quick`",
        description="The quick benchmark: the same as `fastrnn bench --quick` (< 2 min).")
    bench_cli.add_arguments(demo, demo=True)
    commands.add_parser("config", help="print the build and runtime configuration",
                        description="Print fastrnn's version, compiler, OpenMP threads and "
                        "kernel variant.")
    inspect = commands.add_parser(
        "inspect", help="list the recurrent layers in a weights file",
        description="List the recurrent layers in a weights file (PyTorch .pt/.pth, "
        "safetensors, Keras .keras/.h5, ONNX, a TensorFlow 1 checkpoint, fastrnn .npz/.frnn; "
        "the format is read from the content): name, cell, sizes and gate order.")
    inspect.add_argument("file", metavar="FILE", help="the weights file")
    convert = commands.add_parser(
        "convert", help="convert one recurrent layer to another format",
        description="Read one recurrent layer from FILE (any format `fastrnn inspect` reads) "
        "and write it to OUT in the format its extension names: .npz (fastrnn, keeps "
        "everything), .frnn (the C runtime's file), .pt/.pth (PyTorch state_dict), "
        ".safetensors, .onnx, .keras.")
    convert.add_argument("file", metavar="FILE", help="the weights file to read")
    convert.add_argument("-o", "--output", metavar="OUT", required=True,
                         help="the file to write; its extension names the format unless "
                         "--format is given")
    convert.add_argument("--format", choices=io.SAVE_FORMATS, metavar="FORMAT",
                         help="the format to write, whatever OUT's extension: "
                         + ", ".join(io.SAVE_FORMATS))
    convert.add_argument("--name", metavar="NAME",
                         help="the layer to convert when FILE holds several (`fastrnn "
                         "inspect FILE` lists them)")
    convert.add_argument("--quantize", choices=("int8", "bf16"), metavar="SCHEME",
                         help="write the layer with int8 or bf16 weights (inference only; .npz "
                         "or .frnn output; docs/quantization.md): int8, bf16")
    convert.add_argument("--sequence-lens", action="store_true",
                         help="onnx only: give the graph an int32 (batch,) sequence_lens input "
                         "for ragged batches")
    _add_predict(commands)
    for command_parser in commands.choices.values():  # each command reports its own misuse
        command_parser.set_defaults(usage_error=command_parser.error)
    return parser


def main(argv=None):
    """Run the `fastrnn` command with `argv` (default: sys.argv[1:]); returns the exit status.
    Usage errors exit through argparse (SystemExit with status 2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(f"fastrnn: unknown command {argv[0]}; the commands are {', '.join(COMMANDS)} "
              "(fastrnn --help)", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command in ("bench", "demo"):
        from .bench import cli as bench_cli
        return bench_cli.run(args, prog=f"fastrnn {args.command}", error=args.usage_error)
    if args.command == "config":
        from . import show_config
        show_config()
        return 0
    if args.command == "predict":
        return _predict_command(args)
    return _io_command(args)


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_predict(commands):
    predict = commands.add_parser(
        "predict", help="score a Parquet data set of sequences with a model",
        description="Score every row of a Parquet file or directory of them with a model "
        "(any file `fastrnn inspect` reads; a file with several recurrent layers runs them as "
        "a stack unless --name picks one) and write OUTPUT, a directory of Parquet part files "
        "with the id, the output and an error for each row (null unless the row is bad). The "
        "input is streamed in chunks; rows of similar length are batched together to cut "
        "padding. A bad row (wrong feature size, NaN, an empty sequence) is reported with its "
        "id and the job goes on unless --strict. Needs pyarrow: pip install "
        "\"fastrnn[predict]\".")
    predict.add_argument("model", metavar="MODEL", help="the model file")
    predict.add_argument("input", metavar="INPUT", help="a Parquet file or a directory of them")
    predict.add_argument("-o", "--output", metavar="OUTPUT", required=True,
                         help="the directory to write (empty or absent, unless --resume)")
    predict.add_argument("--column", metavar="COLUMN",
                         help="the sequence column: a list of per-step vectors, a fixed-size "
                         "array or a fixed-shape tensor (default: the only such column)")
    predict.add_argument("--id-column", metavar="COLUMN",
                         help="the column identifying rows, copied to the output (default: "
                         "the input row number, as a column 'row')")
    predict.add_argument("--reduce", choices=("last", "all"), default="last",
                         help="last: the output at each row's last valid step (default); "
                         "all: the outputs of every valid step, a list per row")
    predict.add_argument("--name", metavar="NAME",
                         help="the one layer to run when MODEL holds several (`fastrnn "
                         "inspect MODEL` lists them); default: all of them as a stack")
    predict.add_argument("--batch-size", type=_positive, default=64, metavar="N",
                         help="rows per call of the model (default 64)")
    predict.add_argument("--chunk-rows", type=_positive, default=4096, metavar="N",
                         help="rows read, length-grouped and written per part file (default "
                         "4096)")
    predict.add_argument("--no-grouping", action="store_true",
                         help="batch rows in input order instead of by length (more padding, "
                         "the same results)")
    predict.add_argument("--strict", action="store_true",
                         help="stop at the first bad row (exit status 1)")
    predict.add_argument("--resume", action="store_true",
                         help="continue an interrupted run into the same OUTPUT: finished "
                         "chunks are kept, no row is written twice")
    predict.add_argument("--engine", choices=("local", "ray", "dask"), default="local",
                         help="where chunks are scored: local (this process, default), ray or "
                         "dask (worker processes, each loading the model once)")
    predict.add_argument("--workers", type=_positive, metavar="N",
                         help="ray / dask: worker processes (default 2)")
    predict.add_argument("--threads", type=_positive, metavar="N",
                         help="fastrnn threads per worker (default: 1 on ray / dask, "
                         "fastrnn's setting locally)")
    predict.add_argument("--address", metavar="ADDRESS",
                         help="ray / dask: the cluster to use (default: start a local one)")
    predict.add_argument("--no-progress", action="store_true",
                         help="no progress bar or progress lines on stderr")


_BAD_ROWS_SHOWN = 20  # bad rows printed one per line; the rest are counted


def _predict_command(args):
    from . import predict as P
    prog = "fastrnn predict"
    if args.engine == "local" and (args.workers or args.address):
        args.usage_error("--workers and --address apply to --engine ray or dask")
    shown = []

    def on_bad_row(bad):
        if len(shown) < _BAD_ROWS_SHOWN:
            where = "" if args.id_column is None else f" (id {bad.id})"
            print(f"{prog}: bad row {bad.row}{where}: {bad.reason}", file=sys.stderr)
        shown.append(bad)

    progress = None if args.no_progress else P.Progress(sys.stderr)
    try:
        report = P.predict_parquet(
            args.model, args.input, args.output, column=args.column, id_column=args.id_column,
            reduce=args.reduce, batch_size=args.batch_size, chunk_rows=args.chunk_rows,
            group=not args.no_grouping, strict=args.strict, resume=args.resume,
            engine=args.engine, workers=args.workers, threads=args.threads,
            address=args.address, name=args.name, progress=progress, on_bad_row=on_bad_row)
    except KeyboardInterrupt:
        if progress is not None:
            progress.finish()
        print(f"{prog}: interrupted; finished chunks are kept in {args.output} (--resume "
              "continues)", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, ImportError, OSError) as exc:
        if progress is not None:
            progress.finish()
        plain = (args.model, args.input, args.output, args.name, args.column, args.id_column)
        print(f"{prog}: {cli_message(exc, plain)}", file=sys.stderr)
        return 1
    if progress is not None:
        progress.finish()
    if len(shown) > _BAD_ROWS_SHOWN:
        print(f"{prog}: ... {len(shown) - _BAD_ROWS_SHOWN} more bad rows (their ids and reasons "
              f"are in the output's error column)", file=sys.stderr)
    print(_predict_summary(report))
    return 0


def _predict_summary(report):
    s = report.stats
    rate = report.new_rows / report.seconds if report.seconds else 0.0
    resumed = f", {report.resumed_chunks} chunks from before kept" if report.resumed_chunks else ""
    read = (f" ({report.read_in_workers} read by the workers themselves)"
            if report.read_in_workers else "")
    return (f"wrote {report.output}: {s.rows:,} rows ({s.rows - s.bad_rows:,} scored, "
            f"{s.bad_rows:,} bad){resumed}; padding {s.padding_ratio:.1%} of the steps computed "
            f"({s.ungrouped_padding_ratio:.1%} without length grouping); "
            f"{len(report.parts)} part file{'' if len(report.parts) == 1 else 's'}{read} in "
            f"{report.seconds:.1f} s ({rate:,.0f} rows/s)")


def _io_command(args):
    from . import io
    prog = f"fastrnn {args.command}"
    try:
        if args.command == "inspect":
            print(f"{args.file}: {io.detect_format(args.file)}")
            for name, text in io.inspect(args.file):
                print(f"  {name}: {text}")
            return 0
        options = _convert_options(args)
        layer = io.convert(args.file, args.output, format=args.format, name=args.name,
                           quantize=args.quantize, **options)
        print(f"wrote {args.output}: {layer!r}")
        return 0
    except (ValueError, TypeError, KeyError, ImportError, OSError) as exc:
        plain = (args.file, getattr(args, "output", None), getattr(args, "name", None))
        print(f"{prog}: {cli_message(exc, plain)}", file=sys.stderr)
        return 1


def _convert_options(args):
    """The writer options of `fastrnn convert`; a usage error (exit 2) for an output whose
    format is unknown, or an option that format does not take."""
    from . import io
    fmt = args.format
    if fmt is None:
        ext = os.path.splitext(args.output)[1].lower()
        fmt = io._SAVE_FORMATS.get(ext)
        if fmt is None:
            args.usage_error(
                f"cannot tell the format of {args.output} from its extension "
                f"({ext or 'none'}); use one of {', '.join(sorted(set(io._SAVE_FORMATS)))} or "
                f"give --format FORMAT ({', '.join(io.SAVE_FORMATS)})")
    if args.sequence_lens and fmt != "onnx":
        args.usage_error(f"--sequence-lens applies to onnx output only, not {fmt}")
    if args.quantize and fmt not in ("npz", "frnn"):
        args.usage_error(f"--quantize writes .npz or .frnn files (not {fmt}): the other formats "
                         "cannot hold int8 or bf16 weights")
    return {"sequence_lens": True} if args.sequence_lens else {}


def cli_message(exc, plain=()):
    """The text of a library error as the command line shows it: keyword arguments named as
    flags (`name=` -> `--name NAME`), the strings in `plain` (paths, names from the command
    line) and lists of names without Python's quotes, an OSError as `path: reason`."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{os.fspath(exc.filename)}: {exc.strerror}"
    elif isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]  # str(KeyError) is the repr of its argument
    else:
        text = str(exc)
    for value in plain:
        if value:
            text = text.replace(repr(os.fspath(value)), os.fspath(value))
    for pattern, flag in _CLI_WORDING:
        text = pattern.sub(flag, text)
    return text


if __name__ == "__main__":
    sys.exit(main())
