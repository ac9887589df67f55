#!/usr/bin/env bash
# Build the C core and the extension with AddressSanitizer + UndefinedBehaviorSanitizer in a
# scratch copy of the tree, then run the C tests and a representative part of the Python suite
# under them. Any sanitizer report fails the run. Usage: tools/sanitize.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

san="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
make -C src clean >/dev/null
make -C src test CFLAGS="$san" LDFLAGS="-fsanitize=address,undefined"
make -C src clean >/dev/null
# The threads' work sharing (src/fastrnn/team.h) under ThreadSanitizer: its test's buffers are
# ordered only by the team's atomics, so a missing acquire or release is a reported race.
if [ -f "$(${CC:-cc} -print-file-name=libtsan.so)" ]; then
    make -C src build/test_team CFLAGS="-O1 -g -fsanitize=thread" LDFLAGS="-fsanitize=thread" OPENMP=
    TSAN_OPTIONS=halt_on_error=1 src/build/test_team
    make -C src clean >/dev/null
else
    echo "NOTICE: no ThreadSanitizer runtime for ${CC:-cc}; test_team not run under it"
fi

# Tracked and untracked-but-not-ignored files only: no build products, no virtualenv.
git ls-files -z --cached --others --exclude-standard | (cd "$root" && xargs -0 cp --parents -t "$scratch")
cd "$scratch"
# The build needs Cython and setuptools in this environment (a pip install with build isolation
# does not leave them behind).
python -c "import Cython, setuptools" 2>/dev/null || python -m pip install --quiet "cython>=3" "setuptools>=77"
FASTRNN_SANITIZE=address,undefined python setup.py -q build_ext --inplace
asan=$(${CC:-cc} -print-file-name=libasan.so)
ubsan=$(${CC:-cc} -print-file-name=libubsan.so)
# Python itself is not instrumented: preload the runtimes; leaks of the interpreter are noise.
export LD_PRELOAD="$asan:$ubsan"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# The sanitized extension itself must be the one imported (an editable install elsewhere would
# otherwise provide fastrnn._core).
python -c "import fastrnn._core as c, sys; sys.exit(0 if c.__file__.startswith('$scratch') else 1)" \
    || { echo "sanitize.sh: the sanitized build is not the one imported" >&2; exit 1; }
tests=(tests/test_forward.py tests/test_backward.py tests/test_validation.py tests/test_fuzz_api.py
       tests/test_threads.py tests/test_numerics.py tests/test_dropout.py tests/test_variants.py
       tests/test_projection.py tests/test_quantized.py tests/test_freeze.py)
[ $# -gt 0 ] && tests=("$@")
python -m pytest -q -p no:cacheprovider "${tests[@]}"
