"""Command line: `fastrnn bench [options]`, `fastrnn config`, `fastrnn inspect FILE`,
`fastrnn convert FILE -o OUT [--format F] [--name N]`."""
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: fastrnn {bench,demo,config,inspect,convert} [options]\n"
              "  bench   time fastrnn against numpy, PyTorch, ONNX Runtime and Keras (those\n"
              "          installed) and the machine's limit (fastrnn bench --help)\n"
              "  demo    same as: fastrnn bench --quick\n"
              "  config  print the build and runtime configuration\n"
              "  inspect FILE                 list the recurrent layers in a weights file\n"
              "  convert FILE -o OUT [--format npz|frnn|torch|safetensors|onnx] [--name N]")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in ("bench", "demo"):
        from .bench.cli import main as bench
        if cmd == "demo":
            rest = ["--quick", *rest]
        return bench(rest, prog=f"fastrnn {cmd}")
    if cmd == "config":
        import fastrnn
        fastrnn.show_config()
        return 0
    if cmd in ("inspect", "convert"):
        return _io_command(cmd, rest)
    print(f"fastrnn: unknown command {cmd!r} (try --help)", file=sys.stderr)
    return 2


def _io_command(cmd, rest):
    import argparse

    from . import io
    parser = argparse.ArgumentParser(prog=f"fastrnn {cmd}")
    parser.add_argument("file")
    if cmd == "convert":
        parser.add_argument("-o", "--output", required=True)
        parser.add_argument("--format", choices=["npz", "frnn", "torch", "safetensors", "onnx"])
        parser.add_argument("--name", help="the layer to convert when the file holds several")
    args = parser.parse_args(rest)
    try:
        if cmd == "inspect":
            print(f"{args.file}: {io.detect_format(args.file)}")
            for name, text in io.inspect(args.file):
                print(f"  {name}: {text}")
        else:
            layer = io.convert(args.file, args.output, format=args.format, name=args.name)
            print(f"wrote {args.output}: {layer!r}")
    except (ValueError, TypeError, KeyError, ImportError, OSError) as exc:
        print(f"fastrnn {cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
