#!/usr/bin/env bash
# Build the portable sdist and wheel into dist/ (or $1): TXRAY_NATIVE_ARCH=OFF,
# so the module runs on any x86-64 CPU and its hot loops choose AVX-512, AVX2
# or baseline code at run time (txray._native.simd() says which). The CUDA
# kernels are built when nvcc is found (TXRAY_CUDA=AUTO; set TXRAY_CUDA=OFF to
# skip them). The wheel is tagged linux_x86_64: to publish it, repair it into a
# manylinux wheel (auditwheel) first.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
python -m pip install -q build
TXRAY_NATIVE_ARCH=OFF python -m build --outdir "$out" .
ls -l "$out"
