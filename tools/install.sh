#!/usr/bin/env bash
# One-command install of bhcl and its OpenMMLab (OneDL) stack.
#
#   bash tools/install.sh [--venv DIR] [--no-cache]
#
# Uses the Python in $PYTHON (default: python3, or the active virtualenv);
# --venv DIR creates DIR if needed and installs there.  onedl-mmcv has no
# binary wheel: it is built from source with its C++ ops (CUDA kernels too when
# nvcc and a GPU are present) and the built wheel is cached in
# $BHCL_CACHE_DIR (default ~/.cache/bhcl), keyed by torch version and device,
# so a re-run takes seconds.  Every step is idempotent.
set -euo pipefail

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.3.6
MMENGINE_VERSION=0.10.12
MMDET_VERSION=3.5.1
MMROTATE_VERSION=1.2.1
MMPRETRAIN_VERSION=1.3.6

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${BHCL_CACHE_DIR:-$HOME/.cache/bhcl}
VENV=""
USE_CACHE=1
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV=$2; shift 2 ;;
        --no-cache) USE_CACHE=0; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

STEP="start"
T0=$(date +%s)
step() { STEP=$1; echo "[bhcl install +$(( $(date +%s) - T0 ))s] $1"; }
fail() {
    echo "[bhcl install] FAILED at step: $STEP" >&2
    echo "[bhcl install] $1" >&2
    exit 1
}
trap 'fail "command failed (exit $?); read the output above. Re-running is safe: finished steps are skipped."' ERR

step "select Python environment"
if [ -n "$VENV" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        ${PYTHON:-python3} -m venv "$VENV" || fail "could not create venv at $VENV (is python3-venv installed?)"
    fi
    PY="$VENV/bin/python"
elif [ -n "${VIRTUAL_ENV:-}" ]; then
    PY="$VIRTUAL_ENV/bin/python"
else
    PY=${PYTHON:-python3}
fi
command -v "$PY" >/dev/null || fail "no Python interpreter '$PY'; set PYTHON=/path/to/python3.11"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
    || fail "bhcl needs Python >= 3.10 (found $("$PY" --version 2>&1))"
echo "    python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
PIP=("$PY" -m pip)

step "build tools (setuptools<81, wheel, ninja)"
"${PIP[@]}" install -q -r "$REPO_ROOT/requirements/build.txt"

step "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION"
if "$PY" -c "import torch, torchvision" 2>/dev/null; then
    echo "    found torch $("$PY" -c 'import torch; print(torch.__version__)'), keeping it"
else
    "${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
        || fail "pip could not install torch==$TORCH_VERSION; install torch for your platform first, then re-run"
fi

TORCH_TAG=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
CUDA_OK=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')
if [ "$CUDA_OK" = 1 ] && command -v nvcc >/dev/null; then
    DEVICE_TAG="cu$(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1\2/p')"
    export FORCE_CUDA=1
else
    DEVICE_TAG=cpu
    export FORCE_CUDA=0
fi

mmcv_has_ops() {
    "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as md, mmcv, mmcv.ops  # noqa
from mmcv.utils import ext_loader
ext_loader.load_ext('_ext', ['nms_rotated'])
assert md.version('onedl-mmcv') == mmcv.__version__
EOF
}

step "onedl-mmcv $MMCV_VERSION with C++ ops (torch $TORCH_TAG, $DEVICE_TAG)"
if mmcv_has_ops && [ "$("$PY" -c 'import mmcv; print(mmcv.__version__)')" = "$MMCV_VERSION" ]; then
    echo "    already installed with compiled ops"
else
    WHEEL_DIR="$CACHE_DIR/wheels/torch$TORCH_TAG-$DEVICE_TAG"
    mkdir -p "$WHEEL_DIR"
    WHEEL=$(ls "$WHEEL_DIR"/onedl_mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)
    if [ "$USE_CACHE" = 0 ] || [ -z "$WHEEL" ]; then
        JOBS=$(nproc 2>/dev/null || echo 2)
        BUILD=$(mktemp -d)
        echo "    no cached wheel: building from source with MAX_JOBS=$JOBS (about 18 min on 2 cores)"
        ( cd "$BUILD" && "${PIP[@]}" download -q --no-deps --no-binary :all: "onedl-mmcv==$MMCV_VERSION" ) \
            || fail "could not download the onedl-mmcv $MMCV_VERSION sdist from the package index"
        tar xzf "$BUILD"/onedl_mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
        SRC="$BUILD/onedl_mmcv-$MMCV_VERSION"
        # torch >= 2.6 headers refuse C++14/17; mmcv hard-codes them.
        sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
        ( cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS=$JOBS "${PIP[@]}" wheel --no-deps --no-build-isolation \
            -w "$WHEEL_DIR" . ) || fail "building onedl-mmcv failed; needs gcc/g++ and the Python headers (and nvcc for CUDA)"
        rm -rf "$BUILD"
        WHEEL=$(ls "$WHEEL_DIR"/onedl_mmcv-"$MMCV_VERSION"-*.whl | head -n1)
    else
        echo "    using cached wheel $(basename "$WHEEL")"
    fi
    "${PIP[@]}" install -q --force-reinstall --no-deps "$WHEEL"
    "${PIP[@]}" install -q addict opencv-python packaging Pillow pyyaml yapf "onedl-mmengine==$MMENGINE_VERSION"
    mmcv_has_ops || fail "onedl-mmcv installed but its compiled ops do not load; re-run with --no-cache"
fi

step "onedl-mmengine / onedl-mmdetection / onedl-mmrotate / onedl-mmpretrain"
"${PIP[@]}" install -q --no-build-isolation "onedl-mmengine==$MMENGINE_VERSION" \
    "onedl-mmdetection==$MMDET_VERSION" "onedl-mmrotate==$MMROTATE_VERSION" \
    "onedl-mmpretrain==$MMPRETRAIN_VERSION"

step "runtime requirements (besides torch and the mm* stack)"
"${PIP[@]}" install -q -r <(grep -vE '^(torch|torchvision|onedl-)' "$REPO_ROOT/requirements/runtime.txt")

step "test requirements"
"${PIP[@]}" install -q -r "$REPO_ROOT/requirements/tests.txt"

step "bhcl (editable)"
"${PIP[@]}" install -q --no-build-isolation --no-deps -e "$REPO_ROOT"

step "check"
"$PY" -c "import bhcl, mmrotate.models, mmdet.models; from mmcv.ops import nms_rotated; print('    bhcl', bhcl.__version__, 'ready')" \
    || fail "the stack installed but 'import bhcl' fails; see the traceback above"
echo "[bhcl install] done in $(( $(date +%s) - T0 ))s with $PY"
