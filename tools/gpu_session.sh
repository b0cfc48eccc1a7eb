#!/usr/bin/env bash
# The GPU checks of one short session on a lent GPU, most important first, in about 7 minutes:
# the CUDA tests beyond the op's own (model, fused primitives, mm stack), then the
# benchmarks behind the GPU targets in README ("Speed and memory (GPU)"), the whole-model ones
# with their counted traffic (how close to the card's bandwidth), last a profile of the
# forward (where the time goes). Each step has a time limit, writes its full output to
# $OUT/<step>.txt (tables also as JSON) and prints its tail.
#
#   bash tools/gpu_session.sh            (after the extension is built with CUDA kernels)
#
# Every benchmark line below is parsed by tests/tools/test_gpu_session.py, so a bad flag shows
# on the CPU, not in the GPU session.
set -u
OUT=${OUT:-/tmp/out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 seconds=$2
  shift 2
  local start=$SECONDS
  timeout "$seconds" "$@" > "$OUT/$name.txt" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s"
  tail -n 25 "$OUT/$name.txt"
}

BENCH=("$PYTHON" tools/benchmark.py --device cuda --sizes 448 --maps 32 --channels 384 --warmup 2 \
  --repeats 5)

step cuda-tests 105 "$PYTHON" -m pytest -q -p no:cacheprovider -k cuda \
  tests/upsampler/test_anyup_on_cuda.py tests/ops/test_fused.py tests/mm/test_cuda.py
step op 80 "${BENCH[@]}" --modes op op-train --backends cuda_tiled torch --batches 1 4 \
  --bf16 --json "$OUT/op.json"
step forward 70 "${BENCH[@]}" --modes forward --backends official torch cuda_tiled --bf16 \
  --cuda-fused-kernels --traffic --json "$OUT/forward.json"
step forward-b4 40 "${BENCH[@]}" --modes forward --batches 4 --backends official torch \
  cuda_tiled --cuda-fused-kernels --traffic --json "$OUT/forward-b4.json"
step train 60 "${BENCH[@]}" --modes train --batches 4 --backends official torch cuda_tiled \
  --cuda-fused-kernels --traffic --json "$OUT/train.json"
step large 35 "$PYTHON" tools/benchmark.py --device cuda --modes forward --sizes 896 2048 \
  --maps 64 --channels 384 --backends torch cuda_tiled --repeats 3 --json "$OUT/large.json"
step downstream 35 "$PYTHON" tools/benchmark.py --device cuda --modes downstream --sizes 448 \
  --repeats 5 --json "$OUT/downstream.json"
step profile 25 "${BENCH[@]}" --modes forward --backends cuda_tiled --cuda-fused-kernels \
  --repeats 2 --profile 25 --json "$OUT/profile.json"
