"""Build script: compiles the `codec` Cython extension and its C kernels."""

from Cython.Build import cythonize
from setuptools import Extension, setup

# -O3 lets GCC vectorise the kernels; the SIMD levels come from function multi-versioning
# inside the C sources (never -march=native: the wheel must run on any x86-64).
# -fno-wrapv undoes CPython's default -fwrapv: with signed overflow defined to wrap, GCC
# cannot prove the kernels' index arithmetic safe and the vector paths run at half speed.
# -ffp-contract=fast makes every multiply-add an FMA where the CPU has one, in the vector
# lanes and the scalar tail alike, so output is the same however the input is chunked.
CFLAGS = ["-O3", "-fno-wrapv", "-ffp-contract=fast", "-fno-math-errno", "-fno-trapping-math"]

codec_extension = Extension(
    "codec._codec",
    sources=["codec/_codec.pyx", "codec/g711.c", "codec/polyphase.c"],
    depends=["codec/g711.h", "codec/polyphase.h", "codec/filter_taps.h", "codec/fir_kernel.h"],
    include_dirs=["codec"],
    extra_compile_args=CFLAGS,
)

setup(
    ext_modules=cythonize(
        [codec_extension],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)
