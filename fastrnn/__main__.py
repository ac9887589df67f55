"""Command line: `fastrnn bench [options]`, `fastrnn config`."""
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: fastrnn {bench,demo,config} [options]\n"
              "  bench   time fastrnn against numpy, PyTorch, ONNX Runtime and Keras (those\n"
              "          installed) and the machine's limit (fastrnn bench --help)\n"
              "  demo    same as: fastrnn bench --quick\n"
              "  config  print the build and runtime configuration")
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
    print(f"fastrnn: unknown command {cmd!r} (try --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
