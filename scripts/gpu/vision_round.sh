#!/usr/bin/env bash
# This round's GPU checks and measurements (vision tower, device kernels, media through `vllm serve`), run
# after `bash ../shared/gpu/bundle.sh pillow==13.0.0` (the GPU image's own Pillow is older; the resize
# kernels reproduce 13.0) and staging .gpu/partNN (../shared/gpu/README.md), carrying .gpu/install.sh and
# .gpu/nparts:
#   bash scripts/gpu/vision_round.sh a   # checkpoints, GPU pytest, W1 + W3 ours vs in-tree (~5 min)
#   bash scripts/gpu/vision_round.sh b   # parity vs transformers / in-tree; media checks + 1000-request load
#                                          through `vllm serve` (~6 min)
#   bash scripts/gpu/vision_round.sh c   # the vision tower benchmark (~2 min)
#   bash scripts/gpu/vision_round.sh d   # opt-in paths in the engine: greedy vs in-tree with device pixels
#                                          and tower CUDA graphs on; W1 with them (~6 min)
# The calls on one machine, back to back (checkpoints live in /tmp/ckpt). Results: $OUT/round_<call>.tgz.
set -uo pipefail
source "$(dirname "$0")/common.sh"
RET=$OUT; R=/tmp/round; mkdir -p "$R"; OUT=$R
bash .gpu/install.sh 2>&1 | tail -1
pack() { tar czf "$RET/round_$1.tgz" -C "$R" .; }
wait_health() {  # port: up to 240 s
  for _ in $(seq 120); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$1/health', timeout=2)" 2>/dev/null && return 0
    sleep 2
  done
  return 1
}
case ${1:?call a, b, c or d} in
a)
  mk 2b-gptq qwen2-vl-2b gptq-int4 & mk 2b-bf16 qwen2-vl-2b bf16 & wait
  timeout 180 python3 -m pytest -q tests/gpu/test_vision_kernels_gpu.py tests/gpu/test_kernels_gpu.py \
    tests/gpu/test_qwen2_vl_vision_gpu.py >"$R/gpu_tests.log" 2>&1; status gpu_tests $?; tail -3 "$R/gpu_tests.log"
  pack a
  timeout 330 python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W1 W3 --out-dir "$R/offline" \
    >"$R/compare.log" 2>&1; status compare $?; tail -6 "$R/compare.log"
  pack a ;;
b)
  timeout 300 python3 scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" \
    --out "$R/parity_bf16.json" >"$R/parity.log" 2>&1; status parity $?; tail -c 800 "$R/parity_bf16.json"
  pack b
  QWENVL_VLLM_MAX_MEDIA_BYTES=67108864 python3 -m vllm.entrypoints.cli.main serve "$CK/2b-gptq" \
    --max-model-len 8192 --port 8000 >"$R/serve_media.log" 2>&1 &
  if wait_health 8000; then
    timeout 120 python3 scripts/gpu/serve_media_check.py --base-url http://127.0.0.1:8000 --out "$R/serve_media.json" \
      >"$R/serve_media_check.log" 2>&1; status media $?; tail -5 "$R/serve_media_check.log"
    timeout 200 python3 scripts/gpu/serve_media_check.py --base-url http://127.0.0.1:8000 --out "$R/serve_load.json" \
      --load 1000 --concurrency 64 >"$R/serve_load.log" 2>&1; status load $?; tail -5 "$R/serve_load.log"
  else
    echo "server did not come up"; tail -20 "$R/serve_media.log"
  fi
  kill %1 2>/dev/null; wait 2>/dev/null
  pack b ;;
d)
  export QWENVL_VLLM_DEVICE_PIXELS=1 QWENVL_VLLM_VIT_GRAPH_MAX_PATCHES=16384
  timeout 300 python3 scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --skip-transformers \
    --out "$R/parity_device_pixels_graphs.json" >"$R/parity_opt_in.log" 2>&1; status parity_opt_in $?
  timeout 240 python3 benchmarks/throughput.py --ckpt "$CK/2b-gptq" --workloads W1 --impl ours \
    --out-dir "$R/opt_in" >"$R/w1_opt_in.log" 2>&1; status w1_opt_in $?
  pack d ;;
c)
  timeout 240 python3 benchmarks/vision_tower.py --out-dir "$R/tower" --iters 5 >"$R/tower.log" 2>&1; status tower $?
  pack c ;;
esac
