"""Build of fastrnn: the C core (src/) plus the Cython bindings (fastrnn/_core.pyx).

- OpenMP is probed by compiling, linking and running a small program; without it the build
  warns and produces a single-threaded (still correct) extension. FASTRNN_NO_OPENMP=1 opts out.
- Portable by default: the core is compiled for the platform's baseline ISA, and on x86-64 the
  hot kernels are compiled a second time with -mavx2 -mfma and chosen at run time from CPUID
  (FASTRNN_ISA=baseline forces the portable kernels); on AArch64 the int8 kernel is compiled a
  second time for the ARMv8.2 dot-product instructions, used where the CPU has them (HWCAP).
  No -march=native, no -ffast-math;
  FASTRNN_NATIVE=1 opts into -march=native for a local build.
- FASTRNN_SANITIZE=address,undefined builds with those sanitizers (-O1 -g, no recovery from
  undefined behaviour); run Python with the ASan runtime preloaded (see tools/sanitize.sh).
"""
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
CORE = os.path.join("src", "fastrnn")
# -ffp-contract=fast: a * b + c fuses into one FMA wherever the target has it (gcc's GNU C default,
# said for compilers whose default differs), as src/Makefile: the same bits on x86 and ARM.
BASE_FLAGS = ["-O3", "-std=gnu11", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=fast",
              "-fopenmp-simd", "-Wno-psabi"]
# Python's own CFLAGS carry -fwrapv; under it gcc runs int-indexed `omp simd` loops scalar. The
# kernels rely on no signed wrap-around (UBSan checks), so their objects are built without it.
KERNEL_FLAGS = ["-fno-wrapv"]
AVX2_FLAGS = ["-mavx2", "-mfma"]
AVX512_FLAGS = AVX2_FLAGS + ["-mavx512f", "-mavx512vl"]
# The int8 kernels' float operations must not be fused, so every variant gives the same bits.
INT8_FLAGS = ["-ffp-contract=off"]
VNNI_FLAGS = AVX512_FLAGS + ["-mavx512bw", "-mavx512vnni"]
BF16_FLAGS = AVX512_FLAGS + ["-mavx512bw", "-mavx512bf16"]
AVXVNNI_FLAGS = AVX2_FLAGS + ["-mavxvnni"]
OPENMP_TEST = textwrap.dedent("""
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d\\n", n > 0 && omp_get_max_threads() > 0);
        return 0;
    }
""")


def _target_machine():
    """The machine the wheel is for, lower case: the target, not the build machine, which
    differ when cibuildwheel cross-builds macOS x86_64 on arm64 (it sets
    _PYTHON_HOST_PLATFORM=macosx-*-x86_64)."""
    host = os.environ.get("_PYTHON_HOST_PLATFORM")
    return (host.rsplit("-", 1)[-1] if host else platform.machine()).lower()


def _is_x86_64():
    """Whether the AVX2 / AVX-512 kernels are built (x86-64 targets)."""
    return _target_machine() in ("x86_64", "amd64")


def _is_aarch64():
    """Whether the dot-product int8 kernel is built (AArch64 targets)."""
    return _target_machine() in ("aarch64", "arm64")


def _probe_openmp(compiler):
    """Compile, link and run an OpenMP program; return the flags that worked or None."""
    if os.environ.get("FASTRNN_NO_OPENMP") == "1":
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_TEST)
        for flags in (["-fopenmp"], ["-Xpreprocessor", "-fopenmp", "-lomp"]):
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
                exe = os.path.join(tmp, "omp_probe")
                compiler.link_executable(objs, exe, extra_postargs=flags)
                out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
                if out.returncode == 0 and out.stdout.strip() == "1":
                    return flags
            except Exception:  # noqa: BLE001 - any failure means "no OpenMP with these flags"
                continue
    return None


def _sanitizer_flags():
    wanted = os.environ.get("FASTRNN_SANITIZE", "").strip()
    if not wanted:
        return []
    known = {"address", "undefined", "thread", "leak"}
    bad = set(wanted.split(",")) - known
    if bad:
        raise SystemExit(f"FASTRNN_SANITIZE: unknown sanitizer(s) {sorted(bad)}; known {sorted(known)}")
    return [f"-fsanitize={wanted}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined",
            "-O1", "-g"]


class BuildExt(build_ext):
    def build_extensions(self):
        native = os.environ.get("FASTRNN_NATIVE") == "1"
        sanitize = _sanitizer_flags()
        omp = _probe_openmp(self.compiler)
        if omp is None:
            bar = "*" * 72
            print(f"\n{bar}\n* fastrnn: OpenMP not found: building a SINGLE-THREADED extension."
                  f"\n* Results are identical; install libgomp/libomp for threads.\n{bar}\n",
                  file=sys.stderr)
        for ext in self.extensions:
            flags = BASE_FLAGS + (["-march=native"] if native else []) + sanitize
            ext.extra_compile_args = flags + (["-fopenmp"] if omp else [])
            ext.extra_link_args = [f for f in (omp or []) if f != "-Xpreprocessor"] + sanitize[:1]
            # The kernels are objects of their own, compiled with their own flags (setuptools
            # has no per-file flags) and linked in as extra_objects: the baseline ones always,
            # the AVX2+FMA and AVX-512 ones (the same source again) on x86-64.
            objs = self.compiler.compile(
                [os.path.join(CORE, "kernels_baseline.c"),
                 os.path.join(CORE, "stream_kernels_baseline.c")],
                output_dir=self.build_temp,
                include_dirs=[CORE],
                extra_postargs=ext.extra_compile_args + KERNEL_FLAGS,
            )
            objs += self.compiler.compile(
                [os.path.join(CORE, "qgemm_baseline.c")], output_dir=self.build_temp,
                include_dirs=[CORE],
                extra_postargs=ext.extra_compile_args + KERNEL_FLAGS + INT8_FLAGS)
            if _is_x86_64():
                objs += self.compiler.compile(
                    [os.path.join(CORE, "qgemm_avx2.c")], output_dir=self.build_temp,
                    include_dirs=[CORE],
                    extra_postargs=ext.extra_compile_args + KERNEL_FLAGS + INT8_FLAGS
                    + AVX2_FLAGS)
                objs += self.compiler.compile(
                    [os.path.join(CORE, "qgemm_avx512vnni.c")], output_dir=self.build_temp,
                    include_dirs=[CORE],
                    extra_postargs=ext.extra_compile_args + KERNEL_FLAGS + INT8_FLAGS
                    + VNNI_FLAGS)
                objs += self.compiler.compile(
                    [os.path.join(CORE, "qgemm_avxvnni.c")], output_dir=self.build_temp,
                    include_dirs=[CORE],
                    extra_postargs=ext.extra_compile_args + KERNEL_FLAGS + INT8_FLAGS
                    + AVXVNNI_FLAGS)
                objs += self.compiler.compile(
                    [os.path.join(CORE, "qgemm_avx512bf16.c")], output_dir=self.build_temp,
                    include_dirs=[CORE],
                    extra_postargs=ext.extra_compile_args + KERNEL_FLAGS + INT8_FLAGS
                    + BF16_FLAGS)
                objs += self.compiler.compile(
                    [os.path.join(CORE, "kernels_avx2.c"),
                     os.path.join(CORE, "stream_kernels_avx2.c")],
                    output_dir=self.build_temp,
                    include_dirs=[CORE],
                    extra_postargs=ext.extra_compile_args + KERNEL_FLAGS + AVX2_FLAGS,
                )
                objs += self.compiler.compile(
                    [os.path.join(CORE, "kernels_avx512.c")],
                    output_dir=self.build_temp,
                    include_dirs=[CORE],
                    extra_postargs=ext.extra_compile_args + KERNEL_FLAGS + AVX512_FLAGS,
                )
            if _is_aarch64():
                # int8 on the ARMv8.2 dot-product instructions, chosen at run time (HWCAP)
                objs += self.compiler.compile(
                    [os.path.join(CORE, "qgemm_neondot.c")], output_dir=self.build_temp,
                    include_dirs=[CORE],
                    extra_postargs=ext.extra_compile_args + KERNEL_FLAGS + INT8_FLAGS
                    + ["-march=armv8.2-a+dotprod"])
            ext.extra_objects = list(objs)
        self.openmp_flags = omp
        super().build_extensions()


extensions = [
    Extension(
        "fastrnn._core",
        sources=[
            "fastrnn/_core.pyx",
            os.path.join(CORE, "fastrnn.c"),
            os.path.join(CORE, "model.c"),
        ],
        include_dirs=[CORE, np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        depends=[os.path.join(CORE, f) for f in os.listdir(os.path.join(HERE, CORE))],
    )
]

setup(
    ext_modules=cythonize(extensions, language_level=3,
                          compiler_directives={"freethreading_compatible": True}),
    cmdclass={"build_ext": BuildExt},
)
