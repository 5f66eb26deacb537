#!/usr/bin/env bash
# Every GPU measurement of bionas in one command, for a short loan of one CUDA machine.
#
#   bash benchmarks/gpu_loan.sh [WHEELS]
#
# Run from anywhere in the checkout. WHEELS: a folder of wheels of what the machine lacks (default: .whl
# in the checkout's root, git-ignored); every wheel there is installed without dependencies into a temporary
# folder put first on PYTHONPATH, then the checkout with `pip install -e .` (its `bionas` command). A
# machine with torch 2.11 but no pydantic, cmaes or mlxtend needs these wheels (Python 3.12, manylinux):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pydantic pydantic-core annotated-types typing-inspection cmaes mlxtend
#
# (one version of each; pydantic-core the version the pydantic wheel pins). Then carry .whl (and, for
# LR-NAS's row, checkouts of github imanehmz/LR-NAS and of jsalbert/biotorch's biotorch/ folder, e.g. in
# the git-ignored .third_party/, named by LRNAS= and BIOTORCH=) to the machine and run this script there.
#
# Stages, in this order, each under its own `timeout` (seconds) and all within BUDGET (default 540 s, so
# the whole command ends well inside 10 minutes; the stages usually end sooner):
#
#   install  60   the wheels and the checkout
#   check   285   benchmarks/gpu_check.py --budget 270: the search and retrain steps eager vs CUDA graphs,
#                 the 50-epoch projection, the quickstart end to end, the attacks, torchrun
#   auto    100   benchmarks/runtime_auto.py --device cuda --size small: amp, channels_last, compile and
#                 cuda_graphs flipped one at a time from `auto`
#   tests    60   pytest of the GPU tests (GPU_TESTS; default tests/test_*graph*.py, if there are any)
#   cost     75   benchmarks/search_cost.py --device cuda at the published size, batched, with its counts
#
# STAGES="check auto" runs only those; SMOKE=1 runs the measuring stages on the CPU at toy sizes (it checks
# this script where there is no GPU; leave out install there). Each stage's output goes to OUT/<stage>.log as it comes (OUT:
# $OUT, which the loan brings back, or ./gpu-loan-out), and to this command's output; OUT/summary.log
# says what ran, its exit status and seconds (124: timed out). At most 7 files are written under OUT.
set -u
cd "$(dirname "$0")/.."
WHEELS=${1:-.whl}
OUT=${OUT:-gpu-loan-out}
BUDGET=${BUDGET:-540}
STAGES=${STAGES:-install check auto tests cost}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}  # this checkout's code, installed or not
if [[ ${SMOKE:-} == 1 ]]; then
  CHECK=(--device cpu --tiny --box-scale 4) AUTO=(--device cpu --size tiny --steps 2 --box 90)
  COST=(--device cpu --sizes tiny --no-counts)
else
  CHECK=() AUTO=(--device cuda --size small --steps 4 --box 45) COST=(--device cuda --sizes published)
fi
mkdir -p "$OUT"
STARTED=$SECONDS

note() { echo "== $*" | tee -a "$OUT/summary.log"; }

wanted() { [[ " $STAGES " == *" $1 "* ]]; }

# stage NAME SECONDS COMMAND...: COMMAND under `timeout` (SECONDS, or what is left of BUDGET), its output in
# OUT/NAME.log as it comes; its exit status in $STATUS.
stage() {
  local name=$1 box=$2
  shift 2
  local left=$((BUDGET - (SECONDS - STARTED)))
  ((box > left)) && box=$left
  if ((box < 10)); then
    note "$name: skipped, the budget of $BUDGET s is spent"
    STATUS=125
    return
  fi
  note "$name (at most $box s): $*"
  local begun=$SECONDS
  timeout --kill-after=5 "$box" "$@" 2>&1 | tee "$OUT/$name.log"
  STATUS=${PIPESTATUS[0]}
  note "$name: exit $STATUS after $((SECONDS - begun)) s$( ((STATUS == 124 || STATUS == 137)) && echo ', timed out')"
}

note "gpu_loan: $(date -u +%FT%TZ); $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"

if wanted install; then
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  if ((${#wheels[@]})); then
    SITE=$(mktemp -d)
    stage install 60 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "${wheels[@]}"
    ((STATUS == 0)) || { note "install: the wheels failed; stopping"; exit 1; }
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  else
    note "install: no wheels in $WHEELS; installing the checkout only"
  fi
  stage install-checkout 60 "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e .
  rm -f "$OUT/install-checkout.log"  # its messages are in this command's output; the files under OUT are few
  ((STATUS == 0)) || note "install: the checkout failed; the scripts still run it from the checkout"
fi
note "$("$PYTHON" -c 'import torch, bionas; print("torch", torch.__version__, "cuda", torch.version.cuda,
  "bionas", bionas.__version__, "gpu", torch.cuda.is_available())' 2>&1 | tail -1)"

LRNAS_ARGS=()
[[ -n ${LRNAS:-} ]] && LRNAS_ARGS+=(--lrnas "$LRNAS")
[[ -n ${BIOTORCH:-} ]] && LRNAS_ARGS+=(--biotorch "$BIOTORCH")

wanted check && stage check 285 "$PYTHON" benchmarks/gpu_check.py --budget 270 "${CHECK[@]}" "${LRNAS_ARGS[@]}"
wanted auto && stage auto 100 "$PYTHON" benchmarks/runtime_auto.py --budget 90 "${AUTO[@]}"
if wanted tests; then
  read -r -a tests <<<"${GPU_TESTS:-$(ls tests/test_*graph*.py 2>/dev/null | tr '\n' ' ')}"
  if ((${#tests[@]})); then
    stage tests 60 "$PYTHON" -m pytest -q -p no:cacheprovider -rs "${tests[@]}"
  else
    note "tests: none (GPU_TESTS unset and no tests/test_*graph*.py)"
  fi
fi
wanted cost && stage cost 75 "$PYTHON" benchmarks/search_cost.py --modes batched --layouts channels_last \
  --partial-channels 1 --no-compile --rounds 2 --budget 30 "${COST[@]}"
note "gpu_loan: $((SECONDS - STARTED)) s in all"
