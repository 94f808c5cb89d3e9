#!/usr/bin/env bash
# The GPU paths of vitlab, exercised end to end in at most 8 minutes: trains vit_study_b and
# mobilevit_xxs on CIFAR-100-shaped synthetic data (32×32 RGB, 50,000 training and 10,000 test images;
# 16 classes, the synthetic generator's maximum) with train.amp=auto (bf16 on CUDA), eager and
# torch.compile'd, on the device-resident pipeline (data tensors live on the GPU), then both models as a
# study with 2 workers sharing the one GPU. Prints img/s per check and every failure; exits 1 if any
# check failed, 2 when there is no CUDA device (nothing is run).
#
#   bash benchmarks/gpu_check.sh                         # python from $PYTHON, else `python`
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
#
# GPU_CHECK_DEVICE=cpu GPU_CHECK_IMAGES=1024 runs the same checks on a CPU, small: a dry run of the
# script itself, not a measurement.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
IMAGES=${GPU_CHECK_IMAGES:-50000}
TEST_IMAGES=$(( IMAGES / 5 ))
CHECK_TIMEOUT_S=100   # per training run: 7 runs (2 of them concurrent) stay under 8 minutes
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if [ "$DEVICE" = cuda ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False, or $PY has no torch); nothing was run" >&2
    exit 2
fi
"$PY" -c "import torch; print('gpu_check:', torch.__version__,
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA', flush=True)"

OUT=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
COMMON=(device="$DEVICE" data.name=synthetic data.synthetic_train="$IMAGES" data.synthetic_test="$TEST_IMAGES"
        data.synthetic_classes=16 train.amp=auto train.epochs=2 train.batch_size=128 train.eval_batch_size=1000
        train.progress=false)
FAILED=()

report() {  # label, run directory: img/s of the last epoch (the first includes warm-up and compilation)
    "$PY" - "$1" "$2" <<'EOF'
import json, sys
from pathlib import Path
label, run = sys.argv[1], Path(sys.argv[2])
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
s = json.loads((run / "summary.json").read_text())
print(f"  {label:34s} {rows[-1]['throughput_img_s']:9.0f} img/s  amp={s.get('amp')}  status={s['status']}  "
      f"test_top1={s.get('test_top1', float('nan')):.3f}  first epoch {rows[0]['epoch_time_s']:.1f} s", flush=True)
EOF
}

check() {  # label, extra overrides...
    local label=$1; shift
    local dir="$OUT/$label"
    if timeout "$CHECK_TIMEOUT_S" "$PY" -m vitlab train --out "$dir" "${COMMON[@]}" "$@" >"$dir.log" 2>&1; then
        report "$label" "$dir" || FAILED+=("$label: no metrics")
    else
        echo "  $label FAILED (exit $?): $(tail -n 3 "$dir.log" | tr '\n' ' ')"
        FAILED+=("$label")
    fi
}

echo "single runs (one process on the GPU):"
check vit_study_b model.name=vit_study_b
check vit_study_b_compiled model.name=vit_study_b train.compile=true
check mobilevit_xxs model.name=mobilevit_xxs model.strides=cifar
check mobilevit_xxs_compiled model.name=mobilevit_xxs model.strides=cifar train.compile=true

echo "study, 2 workers sharing the GPU (vit_study_b and mobilevit_xxs at once):"
SPEC="$OUT/two_workers.yaml"
{
    echo "name: gpu_check_two_workers"
    echo "base:"
    for kv in "${COMMON[@]}"; do echo "  ${kv%%=*}: ${kv#*=}"; done
    echo "  model.strides: cifar"
    echo "vary:"
    echo "  model.name: [vit_study_b, mobilevit_xxs]"
    echo "seeds: 1"
} >"$SPEC"
sed -i 's/^  model.strides: cifar$//' "$SPEC"  # strides is not a ViT knob: MobileViT's default at 32 px is cifar
if timeout $(( 2 * CHECK_TIMEOUT_S )) "$PY" -m vitlab study "$SPEC" --out "$OUT/study" --workers 2 \
        >"$OUT/study.log" 2>&1; then
    for run in $(find "$OUT/study" -name summary.json -printf '%h\n' | sort); do
        report "worker run $("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['model'])" \
            "$run/summary.json")" "$run" || FAILED+=("study run $run")
    done
else
    echo "  study FAILED (exit $?): $(tail -n 3 "$OUT/study.log" | tr '\n' ' ')"
    FAILED+=("study with 2 workers")
fi

if [ ${#FAILED[@]} -gt 0 ]; then
    echo "gpu_check: ${#FAILED[@]} check(s) failed: ${FAILED[*]} (logs in $OUT)"
    exit 1
fi
echo "gpu_check: all checks passed (runs in $OUT)"
