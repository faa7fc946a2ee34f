#!/usr/bin/env bash
# Idempotent environment setup for mmcrossformer (called by `make`).
#
#   tools/setup_env.sh                 # creates ./.venv with the tested stack
#   PYTHON=/path/to/python tools/setup_env.sh   # installs into your own env
#
# Steps: torch/torchvision -> build tools -> mmcv 2.1.0 compiled against that
# torch (cached per torch build, see below) -> mm* packages -> openmim without
# the openxlab pins that would downgrade setuptools -> this package (-e).
# A stamp file makes the second run a no-op check (a few seconds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONSTRAINTS="$ROOT/requirements.txt"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
    command -v "$PY" >/dev/null || die "PYTHON=$PY is not an executable"
    STAMP_DIR="$ROOT/.setup"
else
    if [[ ! -x .venv/bin/python ]]; then
        BASE_PY="$(command -v python3.11 || command -v python3 || true)"
        [[ -n "$BASE_PY" ]] || die "no python3 found; install Python 3.11 or pass PYTHON=..."
        log "creating .venv with $BASE_PY"
        "$BASE_PY" -m venv .venv
    fi
    PY="$ROOT/.venv/bin/python"
    STAMP_DIR="$ROOT/.venv"
fi
mkdir -p "$STAMP_DIR"

# Re-run when the pins, the requirements, this script or setup.py change.
HASH="$(cat "$CONSTRAINTS" requirements/*.txt "$0" setup.py 2>/dev/null | sha256sum | cut -c1-16)"
STAMP="$STAMP_DIR/.mmcrossformer-setup-$HASH"
if [[ -f "$STAMP" ]] && "$PY" -c "import mmcrossformer, mmcv.ops, mmdet, mmseg, mmpretrain, onnxruntime, onnxscript" 2>/dev/null; then
    log "environment up to date ($PY)"
    exit 0
fi

PIP=("$PY" -m pip --disable-pip-version-check)
PIP_INSTALL=("${PIP[@]}" install -c "$CONSTRAINTS")
# Some machines' pip config lists local index folders that do not exist;
# pip warns about each on every call. Keep the log readable.
quiet_stderr() { "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }

log "build tools"
quiet_stderr "${PIP_INSTALL[@]}" -q "setuptools>=77,<80" wheel ninja psutil

if [[ -n "${PYTHON:-}" ]] && "$PY" -c "import torch" 2>/dev/null; then
    log "using the torch already in $PY: $("$PY" -c 'import torch; print(torch.__version__)')"
else
    log "torch 2.13.0 + torchvision 0.28.0 (standard build; runs on CPU too)"
    quiet_stderr "${PIP_INSTALL[@]}" -q "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0"
fi

# mmcv 2.1.0 has no wheels for this torch: it is compiled from source, which
# takes ~10 minutes on 2 cores. pip's own wheel cache keys a built wheel on the
# sdist only, so a wheel built against another torch (or CUDA) would be reused
# silently and fail at import. We build into our own cache keyed by the torch
# build and the Python ABI, and bypass pip's cache for this one package.
if ! "$PY" -c "from mmcv.ops import nms, roi_align" 2>/dev/null \
        || [[ "$("$PY" -c 'import mmcv; print(mmcv.__version__)' 2>/dev/null)" != "2.1.0" ]]; then
    KEY="$("$PY" -c 'import sys, torch; print(f"torch{torch.__version__}-cuda{torch.version.cuda}-cp{sys.version_info[0]}{sys.version_info[1]}")')"
    WHEEL_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/mmcrossformer/mmcv-wheels/$KEY"
    mkdir -p "$WHEEL_DIR"
    if ! ls "$WHEEL_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
        log "building mmcv 2.1.0 against $KEY (about 10 minutes on 2 cores)"
        MAX_JOBS="${MAX_JOBS:-$(nproc)}" quiet_stderr "${PIP[@]}" wheel --no-build-isolation --no-deps \
            --no-cache-dir -w "$WHEEL_DIR" "mmcv==2.1.0"
    else
        log "reusing mmcv wheel built against $KEY"
    fi
    quiet_stderr "${PIP_INSTALL[@]}" -q --force-reinstall --no-deps "$WHEEL_DIR"/mmcv-2.1.0-*.whl
    quiet_stderr "${PIP_INSTALL[@]}" -q addict packaging Pillow pyyaml yapf opencv-python "mmengine==0.10.7"
    "$PY" -c "from mmcv.ops import nms, roi_align" \
        || die "mmcv installed without its compiled ops (mmcv._ext); delete $WHEEL_DIR and re-run"
fi

log "mmengine, mmdet, mmsegmentation, mmpretrain, test and lint tools, ONNX export (deploy extra)"
quiet_stderr "${PIP_INSTALL[@]}" -q "mmengine==0.10.7" "mmdet==3.3.0" "mmsegmentation==1.2.2" \
    "mmpretrain==1.2.0" ftfy regex -r requirements/tests.txt -r requirements/deploy.txt

# openmim 0.3.9 requires opendatalab -> openxlab, which pins setuptools 60.2
# (no pkg_resources fixes, breaks mmcv's setup) and old requests. `mim
# train/test` need none of it (only `mim download --dataset` does), so install
# mim without dependencies plus what its train/test/run commands import.
log "openmim (without openxlab's pins)"
quiet_stderr "${PIP_INSTALL[@]}" -q --no-deps "openmim==0.3.9"
quiet_stderr "${PIP_INSTALL[@]}" -q Click colorama model-index pandas requests rich tabulate

log "mmcrossformer (editable)"
quiet_stderr "${PIP_INSTALL[@]}" -q --no-build-isolation --no-deps -e .

# Built here rather than at the first training step (the build is cached
# per source and flags, see mmcrossformer/models/native_kernel.py).
log "the compiled CPU attention kernel (about a minute on 2 cores)"
"$PY" -c "import sys; from mmcrossformer.models import native_kernel; \
sys.exit(native_kernel.cpu_kernel() is None)" \
    || log "warning: the CPU attention kernel did not build (see above): training on CPU" \
        "runs the slower pure-PyTorch path, and the kernel's tests fail"

"$PY" - <<'PY'
import mmcv, mmdet, mmseg, mmpretrain, mmengine, torch, torchvision
import onnx, onnxruntime, onnxscript
from mmcv.ops import nms, roi_align  # noqa: F401  compiled ops present
import mmcrossformer
print(f"[setup] torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, "
      f"mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}, "
      f"onnx {onnx.__version__}, onnxscript {onnxscript.__version__}, "
      f"onnxruntime {onnxruntime.__version__}, mmcrossformer {mmcrossformer.__version__}")
PY
# mim finds a package's configs, tools and model index in <package>/.mim,
# looking where pip's metadata says the package is. A PEP 660 editable
# install (setuptools >= 80, or a pip that no longer runs `setup.py develop`)
# puts that metadata in site-packages, away from the package, so
# `mim search mmcrossformer` would fail. (Checked from /: from here, the
# repository's own mmcrossformer.egg-info would be found first.)
PY_EXE="$("$PY" -c 'import sys; print(sys.executable)')"
if ! (cd / && "$PY_EXE" -W ignore -c "import os, sys; from mim.utils import get_installed_path; \
sys.exit(not os.path.isdir(os.path.join(get_installed_path('mmcrossformer'), '.mim')))") 2>/dev/null; then
    log "warning: mim cannot see mmcrossformer/.mim (\`mim search mmcrossformer\` will fail):" \
        "pip installed it as a PEP 660 editable wheel; use setuptools < 80 and a pip that runs" \
        "\`setup.py develop\` (e.g. 23.x), or a regular install (\`pip install --no-deps .\`)"
fi
# pip check reports openmim's opendatalab requirement, left out on purpose.
CHECK="$("${PIP[@]}" check 2>&1 | grep -v -i "opendatalab\|Location 'file:" || true)"
if [[ -n "$CHECK" && "$CHECK" != "No broken requirements found." ]]; then
    log "pip check:"; echo "$CHECK"
fi
rm -f "$STAMP_DIR"/.mmcrossformer-setup-*
touch "$STAMP"
log "done ($PY)"
