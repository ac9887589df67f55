"""Command line: `fastrnn demo [--quick]`, `fastrnn config`."""
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: fastrnn {demo,config} [options]\n"
              "  demo    time fastrnn against numpy (and PyTorch if installed)\n"
              "  config  print the build and runtime configuration")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from .bench.demo import main as demo
        demo(rest)
        return 0
    if cmd == "config":
        import fastrnn
        fastrnn.show_config()
        return 0
    print(f"fastrnn: unknown command {cmd!r} (try --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
