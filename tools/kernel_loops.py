"""What the GEMM micro-kernels' inner loops are made of, read from a disassembly.

    objdump -d --no-show-raw-insn build/kernels_baseline.o | python tools/kernel_loops.py [--check]

For every micro-kernel (kern_MxN_<dtype>_<isa>) the innermost loop holding the most
multiply-adds is its k loop; the table gives its size, its multiply-adds (vector and scalar:
`fmla v.4s` / `vfma.f32 q` / `vfmadd...ps` / `fmadd.s`) and its stack accesses (spilled
accumulators). --check fails unless every kernel's loop has vector multiply-adds and no stack access;
--check=f32 asks it of the float32 kernels only (armv7: NEON has no float64 lanes, so float64
runs on scalar VFP registers). --stream reads the streaming step's functions instead
(stream_kernels_<isa>.o, step_<cell>: the matrix-vector loops inlined; the table shows the
loop with the most multiply-adds). tools/cross_test.sh
runs it on the ARM builds."""
import re
import sys

FUNC = re.compile(r"^[0-9a-f]+ <(kern_\d+x\d+_f(?:32|64)_\w+?)(?:\.\w+)*>:$")
# --functions: the streaming step's cells (stream_kernels_<isa>.o), their gemv inlined
STREAM_FUNC = re.compile(r"^[0-9a-f]+ <(step_(?:lstm|gru)\w*_f(?:32|64)_\w+?)(?:\.\w+)*>:$")
BRANCH = re.compile(r"\s(?:b\.\w+|b(?:ne|eq|lt|ge|ltu|geu|nez|eqz|gt|le)(?:\.w|\.n)?|j\w*)\s+"
                    r"(?:[^<]*?,)?\s*([0-9a-f]+)\s+<")
VFMA = re.compile(r"\t(?:fmla\s+v\d+\.(?:4s|2d)|vfma\.f32\s+q|vfmadd\w+p[sd]\s+%[xyz]mm"
                  r"|vfmadd\w+p[sd])")
SFMA = re.compile(r"\t(?:fmadd\.[sd]|fmla\s+[sd]\d|vfma\.f(?:32|64)\s+[sd]\d|fmadd\s+[sd]\d"
                  r"|vfmadd\w+s[sd])")
STACK = re.compile(r"\[sp|\(sp\)|%rsp|\[r13")


def parse(text, func=FUNC):
    funcs, name = {}, None
    for line in text.splitlines():
        m = func.match(line.strip())
        if m:
            name = m.group(1)
            funcs.setdefault(name, [])
            continue
        header = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line.strip())
        if header and not header.group(1).startswith(".L"):  # local labels (RISC-V) continue it
            name = None
            continue
        if name and re.match(r"^\s*[0-9a-f]+:", line):
            addr, _, rest = line.strip().partition(":")
            funcs[name].append((int(addr, 16), rest))
    return funcs


def k_loop(insns):
    """The innermost loop (no backward branch inside it) with the most multiply-adds."""
    loops = []
    for addr, text in insns:
        m = BRANCH.search(text)
        if m and int(m.group(1), 16) < addr:
            loops.append((int(m.group(1), 16), addr))
    best = None
    for lo, hi in loops:
        if any(lo <= lo2 and hi2 < hi for lo2, hi2 in loops if (lo2, hi2) != (lo, hi)):
            continue  # holds an inner loop
        body = [t for a, t in insns if lo <= a <= hi]
        vf = sum(1 for t in body if VFMA.search(t))
        sf = sum(1 for t in body if SFMA.search(t))
        key = (vf + sf, -len(body))
        if best is None or key > best[0]:
            best = (key, len(body), vf, sf, sum(1 for t in body if STACK.search(t)))
    return None if best is None else best[1:]


def main():
    check = "--check" in sys.argv[1:] or "--check=f32" in sys.argv[1:]
    only_f32 = "--check=f32" in sys.argv[1:]
    funcs = parse(sys.stdin.read(), STREAM_FUNC if "--stream" in sys.argv[1:] else FUNC)
    bad = []
    print(f"{'kernel':28s} {'loop insns':>10s} {'vector FMA':>10s} {'scalar FMA':>10s} {'stack':>6s}")
    for name in sorted(funcs):
        loop = k_loop(funcs[name])
        if loop is None:
            print(f"{name:28s} {'(no loop found)':>10s}")
            bad.append(name)
            continue
        n, vf, sf, st = loop
        print(f"{name:28s} {n:10d} {vf:10d} {sf:10d} {st:6d}")
        if (vf == 0 or st) and not (only_f32 and "_f64_" in name):
            bad.append(name)
    if not funcs:
        print("no micro-kernels found in the disassembly")
        return 1
    if check and bad:
        print("not vector FMAs from registers:", ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
