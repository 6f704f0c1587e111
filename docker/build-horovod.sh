#!/usr/bin/env bash
# Builds a Horovod 0.28.1 wheel that works with PyTorch 2.x, and caches it.
#
# Horovod 0.28.1 (its last release) asks CMake for C++14, and PyTorch 2.x headers
# need C++17 (C++20 from the releases whose headers say so); the two CMakeLists.txt
# are patched to the standard the installed PyTorch asks for before the build.
# CPU collectives run on gloo (no MPI); NCCL is added where CUDA is found.
#
#   docker/build-horovod.sh PYTHON [WHEEL_DIR]
# prints the path of the wheel. WHEEL_DIR defaults to ~/.cache/rlrings/wheels, so a
# later run (or CI on the same machine) reuses the wheel instead of compiling again.
set -euo pipefail
PYTHON=${1:?usage: build-horovod.sh PYTHON [WHEEL_DIR]}
WHEELS=${2:-${RLRINGS_CACHE:-$HOME/.cache/rlrings}/wheels}
VERSION=0.28.1
TORCH=$("$PYTHON" -c 'import torch; print(torch.__version__.split("+")[0])')
# NCCL only where a CUDA toolkit is there to compile against
CUDA=$(command -v nvcc > /dev/null && "$PYTHON" -c 'import torch; print("cu" if torch.version.cuda else "cpu")' || echo cpu)
TAG="torch${TORCH}-${CUDA}"
OUT="$WHEELS/horovod-$VERSION-$TAG"
if ls "$OUT"/horovod-*.whl > /dev/null 2>&1; then ls "$OUT"/horovod-*.whl; exit 0; fi

for tool in cmake g++ make; do
  command -v "$tool" > /dev/null || { echo "build-horovod: '$tool' is missing (apt-get install cmake g++ make)" >&2; exit 3; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download --no-deps --no-binary :all: "horovod==$VERSION" -d "$work" >&2
tar -xzf "$work"/horovod-$VERSION.tar.gz -C "$work"
src="$work/horovod-$VERSION"
HEADERS=$("$PYTHON" -c 'import torch.utils.cpp_extension as e; print(e.include_paths()[0])')
STD=17
if grep -q "C++20 or later" "$HEADERS/torch/csrc/api/include/torch/all.h" 2>/dev/null; then STD=20; fi
echo "build-horovod: Horovod $VERSION for PyTorch $TORCH with C++$STD" >&2
for file in "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"; do
  sed -i "s/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD $STD)/" "$file"
  if ! grep -q "set(CMAKE_CXX_STANDARD $STD)" "$file"; then
    echo "build-horovod: $file no longer sets CMAKE_CXX_STANDARD 14; check the patch" >&2; exit 4
  fi
done
export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITH_GLOO=1
export HOROVOD_CPU_OPERATIONS=GLOO MAKEFLAGS="-j$(nproc)"
if [ "$CUDA" = cu ]; then export HOROVOD_GPU_OPERATIONS=NCCL; fi
mkdir -p "$OUT"
"$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$OUT" "$src" >&2
ls "$OUT"/horovod-*.whl
