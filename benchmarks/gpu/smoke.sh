#!/usr/bin/env bash
# GPU session, call 1 of 2 (about 90 s; issue 25): is CUDA there, how fast is each run of the GPU
# matrix alone and how many at once pay off (the plan of call 2 reads both from
# $GENZOO_GPU_STATE), do the CUDA tests pass, does the paper model train. Every figure is written
# to $OUT as soon as it is measured.
#
#   OUT=out bash benchmarks/gpu/smoke.sh        # from the repository root, on the GPU machine
set -uo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/gpu/env.sh
exec > >(tee "$OUT/smoke_log.txt") 2>&1
LIMIT_S=${SMOKE_LIMIT_S:-100}
left() { echo $((LIMIT_S - SECONDS)); }
say() { echo "[smoke $SECONDS s] $*"; }
DATA=(--set "data.dataset.root=$GENZOO_GPU_DATA")

say "the machine"
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
    python3 -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', platform.python_version(), torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')"
    nproc
} 2>&1 | tee "$OUT/gpu_info.txt"

say "each run of the matrix alone, batch 256"
timeout 35 python3 -m benchmarks.gpu.matrix_probe steps "${DATA[@]}" --batches 256 --steps 10 \
    --out "$GENZOO_GPU_STATE/probe_steps.json"
cp "$GENZOO_GPU_STATE/probe_steps.json" "$OUT/" 2>/dev/null

say "how many runs at once"
timeout 45 python3 -m benchmarks.gpu.matrix_probe concurrency "${DATA[@]}" --workers 15 --levels 1 2 4 8 15 \
    --phase-s 3 --ready-timeout-s 25 --out "$GENZOO_GPU_STATE/probe_concurrency.json"
cp "$GENZOO_GPU_STATE/probe_concurrency.json" "$OUT/" 2>/dev/null

say "the CUDA tests (those that skip on a CPU), $(left) s left"
if [ "$(left)" -gt 10 ]; then
    timeout "$(left)" python3 -m pytest -m "not slurm" tests/test_engine_compile.py tests/test_fast_paths.py \
        -k cuda -p no:cacheprovider -q -rA --junitxml="$GENZOO_GPU_STATE/pytest_smoke.xml"
    echo "pytest exit code $?"
    cp "$GENZOO_GPU_STATE/pytest_smoke.xml" "$OUT/" 2>/dev/null
fi
say "done"
