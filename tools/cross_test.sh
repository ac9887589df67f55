#!/usr/bin/env bash
# Cross-builds the C core for other architectures and runs every C test program under QEMU
# user-mode emulation, with and without OpenMP; then runs examples/c/stream.c and
# tests/c/frnn_forward_driver.c there on .frnn files written by Python here and compares their
# outputs with this machine's (tools/cross_fixtures.py).
#
#   tools/cross_test.sh [aarch64] [armv7] [riscv64] [s390x]     (default: all four)
#
# s390x is there as a big-endian machine: the .frnn format is little-endian on every host.
#
# Installs what it needs with apt-get where it is missing (gcc-<triple> cross compilers,
# qemu-user-static), as root or through sudo; where it cannot, prints a NOTICE and exits 0
# unless CROSS_REQUIRED=1. The portability check needs Python with fastrnn importable (built
# for this machine); without it that part is skipped with a NOTICE.
# Environment: CROSS_WORK (scratch directory, default a temporary one), CROSS_CFLAGS (default
# -O3), PYTHON (default python3).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CFLAGS_OPT="${CROSS_CFLAGS:--O3}"
ARCHES=("$@")
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=(aarch64 armv7 riscv64 s390x)

triple_of() {
    case "$1" in
        aarch64) echo aarch64-linux-gnu ;;
        armv7) echo arm-linux-gnueabihf ;;
        riscv64) echo riscv64-linux-gnu ;;
        s390x) echo s390x-linux-gnu ;;
        *) echo "unknown architecture $1 (aarch64, armv7, riscv64, s390x)" >&2; exit 2 ;;
    esac
}
qemu_of() {
    case "$1" in aarch64) echo aarch64 ;; armv7) echo arm ;; riscv64) echo riscv64 ;; s390x) echo s390x ;; esac
}
# armv7: hard-float with NEON and VFPv4 (fused multiply-add), as on a Raspberry Pi 2 and later.
arch_flags() {
    case "$1" in armv7) echo "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard" ;; *) echo "" ;; esac
}
find_qemu() {
    local q
    for q in "qemu-$1-static" "qemu-$1"; do
        if command -v "$q" > /dev/null; then command -v "$q"; return 0; fi
    done
    return 1
}

skip() {
    echo "NOTICE: cross tests skipped: $*"
    if [ "${CROSS_REQUIRED:-0}" = 1 ]; then exit 1; fi
    exit 0
}

# ---- tools ----
missing=()
for a in "${ARCHES[@]}"; do
    t=$(triple_of "$a")
    command -v "$t-gcc" > /dev/null || missing+=("gcc-$t")
    find_qemu "$(qemu_of "$a")" > /dev/null || missing+=(qemu-user-static)
done
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    if ! command -v apt-get > /dev/null; then
        skip "no apt-get to install ${missing[*]}"
    fi
    echo "installing ${missing[*]} with apt-get"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
           $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
           > /tmp/fastrnn-cross-apt.log 2>&1; then
        tail -5 /tmp/fastrnn-cross-apt.log
        skip "apt-get could not install ${missing[*]} (log: /tmp/fastrnn-cross-apt.log)"
    fi
fi

WORK="${CROSS_WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
echo "cross tests in $WORK (CFLAGS $CFLAGS_OPT)"

# ---- this machine's reference outputs ----
FIX="$WORK/fixtures"
have_fixtures=0
if "$PYTHON" -c "import fastrnn" 2> /dev/null; then
    rm -rf "$FIX"
    (cd "$WORK" && "$PYTHON" "$ROOT/tools/cross_fixtures.py" write "$FIX")
    have_fixtures=1
else
    echo "NOTICE: $PYTHON cannot import fastrnn: the .frnn portability check is skipped"
fi

SIZES="$WORK/sizes.md"
echo "| architecture | libfastrnn.a (full) | libfastrnn.so stripped (full) | libfastrnn.a (minimal) | libfastrnn.so stripped (minimal) |" > "$SIZES"
echo "|---|---|---|---|---|" >> "$SIZES"
kib() { echo "$(( ($1 + 512) / 1024 )) KiB"; }
record_sizes() {  # arch strip-command full_build_dir minimal_build_dir
    local full_so min_so
    full_so=$(mktemp) min_so=$(mktemp)
    "$2" -o "$full_so" "$3/libfastrnn.so"
    "$2" -o "$min_so" "$4/libfastrnn.so"
    echo "| $1 | $(kib "$(stat -c %s "$3/libfastrnn.a")") | $(kib "$(stat -c %s "$full_so")") | $(kib "$(stat -c %s "$4/libfastrnn.a")") | $(kib "$(stat -c %s "$min_so")") |" >> "$SIZES"
    rm -f "$full_so" "$min_so"
}

fresh_src() {  # DIR: a clean copy of src/ to build in
    rm -rf "$1"
    mkdir -p "$1"
    cp -r "$ROOT/src/." "$1/"
    rm -rf "$1/build"
}

failed=()
run_case() {  # label command...
    local label=$1; shift
    local t0=$SECONDS
    if "$@" > "$WORK/last.log" 2>&1; then
        echo "  ok    $label ($((SECONDS - t0)) s): $(tail -1 "$WORK/last.log")"
    else
        echo "  FAIL  $label:"
        tail -20 "$WORK/last.log" | sed 's/^/        /'
        failed+=("$label")
    fi
}

for a in "${ARCHES[@]}"; do
    t=$(triple_of "$a")
    q=$(find_qemu "$(qemu_of "$a")")
    sysroot="/usr/$t"
    flags="$(arch_flags "$a")"
    be=""  # raw sample files in the host's byte order (cross_fixtures.py)
    [ "$a" = s390x ] && be=be
    for omp in openmp serial; do
        b="$WORK/$a-$omp"
        fresh_src "$b"
        ompflag=-fopenmp
        [ $omp = openmp ] || ompflag=
        echo "== $a ($t, $omp): build"
        if ! make -s -C "$b" -j2 CC="$t-gcc" OPENMP="$ompflag" CFLAGS="$CFLAGS_OPT $flags" \
                all build/test_core build/test_backward build/test_stream build/test_qgemm \
                build/test_team build/frnn_fuzz \
                > "$b/build.log" 2>&1; then
            tail -30 "$b/build.log"
            failed+=("$a-$omp build")
            continue
        fi
        for prog in stream:examples/c/stream.c driver:tests/c/frnn_forward_driver.c; do
            "$t-gcc" -O2 -std=gnu11 -Wall -Wextra -Werror $flags -I"$b/fastrnn" "$ROOT/${prog#*:}" \
                "$b/build/libfastrnn.a" $ompflag -lm -o "$b/${prog%%:*}"
        done
        echo "== $a ($t, $omp): C tests under $(basename "$q")"
        for prog in test_core test_backward test_stream test_qgemm test_team frnn_fuzz; do
            # test_stream writes build/test_stream.frnn relative to the working directory
            run_case "$a $omp $prog" bash -c "cd '$b' && '$q' -L '$sysroot' ./build/$prog"
        done
        if [ "$a" = aarch64 ]; then
            # QEMU's default CPU has the ARMv8.2 dot product (the int8-neondot kernel runs);
            # a Cortex-A57 has not: the dispatch falls back to the portable int8 kernel
            for prog in test_qgemm test_stream; do
                run_case "$a $omp $prog (Cortex-A57: no dot product)" \
                    bash -c "cd '$b' && '$q' -cpu cortex-a57 -L '$sysroot' ./build/$prog"
            done
        fi
        if [ $have_fixtures = 1 ]; then
            out="$b/frnn-out"
            mkdir -p "$out"
            ok=1
            while read -r kind name B T; do
                if [ "$kind" = stream ]; then
                    "$q" -L "$sysroot" "$b/stream" "$FIX/$name.frnn" "$FIX/$name.x$be" \
                        "$out/$name.y" > /dev/null || ok=0
                else
                    "$q" -L "$sysroot" "$b/driver" "$FIX/$name.frnn" "$B" "$T" "$FIX/$name.x$be" \
                        "$FIX/$name.len$be" - - "$out/$name" || ok=0
                fi
            done < "$FIX/MANIFEST"
            if [ "$a" = aarch64 ]; then  # the int8 models once more on the portable int8 kernel
                for name in lstm_int8 gru_int8; do
                    "$q" -cpu cortex-a57 -L "$sysroot" "$b/stream" "$FIX/$name.frnn" "$FIX/$name.x" \
                        "$out/$name.a57.y" | grep -q "kernels: int8-baseline" || ok=0
                    cmp -s "$out/$name.a57.y" "$FIX/$name.y" || { echo "  $name on Cortex-A57 differs"; ok=0; }
                done
            fi
            echo "== $a ($t, $omp): .frnn files written by Python on $(uname -m), outputs vs $(uname -m)"
            if [ $ok = 1 ] && "$PYTHON" "$ROOT/tools/cross_fixtures.py" compare "$FIX" "$out" "$a"; then
                echo "  ok    $a $omp portability"
            else
                failed+=("$a $omp portability")
            fi
        fi
    done
    # Minimal library (float32, streaming API, no OpenMP): its size, and the same bits.
    b="$WORK/$a-minimal"
    fresh_src "$b"
    echo "== $a ($t): minimal build (STREAM_ONLY=1 FLOAT64=0 OPENMP=)"
    if make -s -C "$b" -j2 CC="$t-gcc" OPENMP= STREAM_ONLY=1 FLOAT64=0 CFLAGS="$CFLAGS_OPT $flags" \
            all > "$b/build.log" 2>&1 \
       && "$t-gcc" -O2 -std=gnu11 -Wall -Wextra -Werror $flags -I"$b/fastrnn" \
            "$ROOT/examples/c/stream.c" "$b/build/libfastrnn.a" -lm -o "$b/stream"; then
        record_sizes "$a" "$t-strip" "$WORK/$a-openmp/build" "$b/build"
        if [ $have_fixtures = 1 ]; then
            names=$("$PYTHON" "$ROOT/tools/cross_fixtures.py" names "$FIX" float32-stream)
            mkdir -p "$b/frnn-out"
            for name in ${names//,/ }; do
                "$q" -L "$sysroot" "$b/stream" "$FIX/$name.frnn" "$FIX/$name.x$be" \
                    "$b/frnn-out/$name.y" > /dev/null
            done
            if "$PYTHON" "$ROOT/tools/cross_fixtures.py" compare "$FIX" "$b/frnn-out" "$a" "$names" \
               && ! "$q" -L "$sysroot" "$b/stream" "$FIX/lstm_float64.frnn" > "$b/refused.log" 2>&1 \
               && grep -q "built without float64" "$b/refused.log"; then
                echo "  ok    $a minimal: float32 models bitwise, a float64 model refused by name"
            else
                failed+=("$a minimal")
            fi
        fi
    else
        tail -20 "$b/build.log"
        failed+=("$a minimal build")
    fi
    # The micro-kernels' inner loops: vector FMAs from registers (no spilled accumulators).
    if { [ "$a" = aarch64 ] || [ "$a" = armv7 ]; } && command -v "$t-objdump" > /dev/null; then
        echo "== $a: micro-kernel inner loops (tools/kernel_loops.py)"
        # armv7 NEON has no float64 lanes: only its float32 kernels are vector code
        check=--check
        [ "$a" = armv7 ] && check=--check=f32
        if "$t-objdump" -d --no-show-raw-insn "$WORK/$a-openmp/build/kernels_baseline.o" \
                | "$PYTHON" "$ROOT/tools/kernel_loops.py" $check > "$WORK/$a-loops.txt"; then
            echo "  ok    $a kernels ($check): k loops are vector FMAs, no stack access"
        else
            failed+=("$a kernel loops")
        fi
        sed 's/^/        /' "$WORK/$a-loops.txt"
    fi
done

# This machine's sizes beside them (x86-64: every kernel variant in one library).
for cfg in full minimal; do
    b="$WORK/native-$cfg"
    fresh_src "$b"
    if [ $cfg = full ]; then
        make -s -C "$b" -j2 CFLAGS="$CFLAGS_OPT" all > "$b/build.log" 2>&1 || failed+=("native build")
    else
        make -s -C "$b" -j2 OPENMP= STREAM_ONLY=1 FLOAT64=0 CFLAGS="$CFLAGS_OPT" all \
            > "$b/build.log" 2>&1 || failed+=("native minimal build")
    fi
done
if [ -f "$WORK/native-full/build/libfastrnn.so" ] && [ -f "$WORK/native-minimal/build/libfastrnn.so" ]; then
    record_sizes "$(uname -m) (here)" strip "$WORK/native-full/build" "$WORK/native-minimal/build"
fi
echo "== library sizes ($CFLAGS_OPT; minimal: STREAM_ONLY=1 FLOAT64=0 OPENMP=)"
cat "$SIZES"
if [ ${#failed[@]} -gt 0 ]; then
    echo "cross tests FAILED: ${failed[*]}"
    exit 1
fi
echo "cross tests passed: ${ARCHES[*]} (OpenMP and serial builds)"
