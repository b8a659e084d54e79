#!/usr/bin/env bash
# This round's GPU checks and measurements, run after `bash ../shared/gpu/bundle.sh pillow==13.0.0` (the GPU
# image's own Pillow is older; the resize kernels reproduce 13.0) and staging .gpu/partNN
# (../shared/gpu/README.md), carrying .gpu/install.sh and .gpu/nparts. One machine, calls back to back
# (checkpoints live in /tmp/ckpt); results in $OUT/round_<call>.tgz.
#   a  benchmarks alone on the GPU: W1 ours vs in-tree (compare.py; a cold in-tree compile takes >2 min),
#      then W1 of ours with device pixels and tower graphs off; tower GPU tests; the Qwen-VL-Chat checkpoints
#      are written on eight CPU cores meanwhile (~9 min)
#   b  correctness, two engines at once: media checks + 1000-request load through `vllm serve` (Qwen2-VL-2B
#      Int4) beside the Qwen-VL-Chat bf16 long-context run vs its float32 reference (~8 min)
#   c  the same for Qwen-VL-Chat-Int4 (media checks; long context vs its dequantized twin, then the combined
#      result file), then Qwen2-VL parity vs transformers and in-tree on this round's tower (~9 min)
#   p  Qwen2-VL parity (transformers, in-tree greedy) with this round's defaults (device pixels, tower graphs)
#   e  `vllm serve` c=16/64: ours, ours encoding ahead, ours encoder-paced, in-tree (~9 min)
#   h  encode-ahead correctness (greedy vs the default scheduler, encoder caches after finish and abort),
#      then `vllm serve` c=64 with 1920x1080 JPEG photos, ours vs in-tree (~8 min)
#   w  a Qwen2-VL-72B GPTQ-Int4 checkpoint written on the GPU (make-checkpoint --device cuda), its size
#   x  W1 (64 requests) on that 72B checkpoint, ours vs in-tree, one H200 (weights + KV from the start-up logs)
#   t  the vision tower benchmark, then the parity run with the fp8 tower (its end-to-end error vs transformers,
#      beside call p's bf16 numbers; expected above the bf16 tolerance) (~8 min)
set -uo pipefail
source "$(dirname "$0")/common.sh"
RET=$OUT; R=/tmp/round; mkdir -p "$R"; OUT=$R
bash .gpu/install.sh 2>&1 | tail -1
pack() { tar czf "$RET/round_$1.tgz" -C "$R" .; }
wait_health() {  # port: up to 300 s
  for _ in $(seq 150); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$1/health', timeout=2)" 2>/dev/null && return 0
    sleep 2
  done
  return 1
}
serve() {  # ckpt port log [args]: `vllm serve` in the background, with a 64 MiB media byte limit for the load
  local ckpt=$1 port=$2 log=$3; shift 3
  QWENVL_VLLM_MAX_MEDIA_BYTES=67108864 python3 -m vllm.entrypoints.cli.main serve "$ckpt" --port "$port" "$@" \
    >"$log" 2>&1 &
  SERVER=$!
}
media_checks() {  # port name [--family qwen-vl]: checks, then (Qwen2-VL) the load
  local port=$1 name=$2; shift 2
  timeout 150 python3 scripts/gpu/serve_media_check.py --base-url "http://127.0.0.1:$port" "$@" \
    --out "$R/serve_media_$name.json" >"$R/serve_media_$name.log" 2>&1; status "media_$name" $?
  tail -3 "$R/serve_media_$name.log"
}
long_context() {  # label ckpt [args]
  local label=$1 ckpt=$2; shift 2
  timeout 420 python3 scripts/gpu/qwen_vl_long_context.py --ckpt "$ckpt" --label "$label" \
    --gpu-memory-utilization 0.35 --kv-cache-gib 16 --out "$R/long_context_$label.json" "$@" >"$R/long_context_$label.log" 2>&1
  status "long_context_$label" $?; tail -c 400 "$R/long_context_$label.json"
}
case ${1:?call a, b, c, p, e, h, w, x or t} in
a)
  mk 2b-gptq qwen2-vl-2b gptq-int4 & mk 2b-bf16 qwen2-vl-2b bf16 & wait
  (export OMP_NUM_THREADS=4; taskset -c 8-15 bash -c "source scripts/gpu/common.sh; OUT=$R
    mk qvl-bf16 qwen-vl-chat bf16 & mk qvl-int4 qwen-vl-chat gptq-int4 & wait
    mk qvl-int4-deq qwen-vl-chat gptq-int4 --dequantized; echo written >$R/qvl_written") &
  timeout 150 python3 -m pytest -q tests/gpu/test_vision_kernels_gpu.py tests/gpu/test_kernels_gpu.py \
    tests/gpu/test_qwen2_vl_vision_gpu.py tests/gpu/test_writer_gpu.py >"$R/gpu_tests.log" 2>&1; status gpu_tests $?; tail -2 "$R/gpu_tests.log"
  timeout 400 python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W1 --out-dir "$R/offline" \
    >"$R/compare.log" 2>&1; status compare $?; tail -4 "$R/compare.log"
  pack a
  mkdir -p "$R/cpu_pixels_eager"
  QWENVL_VLLM_DEVICE_PIXELS=0 QWENVL_VLLM_VIT_GRAPH_MAX_PATCHES=0 timeout 150 python3 benchmarks/throughput.py \
    --ckpt "$CK/2b-gptq" --workloads W1 --impl ours --out-dir "$R/cpu_pixels_eager" >"$R/w1_cpu_pixels.log" 2>&1
  status w1_cpu_pixels_eager $?; tail -c 600 "$R/cpu_pixels_eager/W1_ours.json"
  for _ in $(seq 60); do [ -f "$R/qvl_written" ] && break; sleep 3; done
  du -sh "$CK"/*; pack a ;;
b)
  WRITERS=""
  [ -f "$R/qvl_written" ] || { echo "Qwen-VL-Chat checkpoints incomplete: rewriting"; rm -rf "$CK"/qvl-*
    (mk qvl-bf16 qwen-vl-chat bf16 & mk qvl-int4 qwen-vl-chat gptq-int4 & mk qvl-int4-deq qwen-vl-chat gptq-int4 --dequantized & wait) &
    WRITERS=$!; }
  serve "$CK/2b-gptq" 8000 "$R/serve_2b.log" --max-model-len 8192 --gpu-memory-utilization 0.25
  if wait_health 8000; then
    [ -n "$WRITERS" ] && wait "$WRITERS"
    long_context bf16 "$CK/qvl-bf16" --ref-dtype float32 &
    media_checks 8000 2b
    timeout 240 python3 scripts/gpu/serve_media_check.py --base-url http://127.0.0.1:8000 --out "$R/serve_load_2b.json" \
      --load 1000 --concurrency 64 >"$R/serve_load_2b.log" 2>&1; status load_2b $?; tail -3 "$R/serve_load_2b.log"
  else
    echo "server did not come up"; tail -20 "$R/serve_2b.log"
  fi
  kill "$SERVER" 2>/dev/null; wait
  pack b ;;
c)
  rm -rf "$CK/qvl-bf16"
  serve "$CK/qvl-int4" 8001 "$R/serve_qvl.log" --max-model-len 2048 --gpu-memory-utilization 0.2
  if wait_health 8001; then
    long_context int4 "$CK/qvl-int4" --ref-ckpt "$CK/qvl-int4-deq" &
    media_checks 8001 qvl_int4 --family qwen-vl
    kill "$SERVER" 2>/dev/null
    timeout 300 python3 scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --gpu-memory-utilization 0.2 \
      --kv-cache-gib 4 --out "$R/parity_bf16.json" >"$R/parity.log" 2>&1; status parity $?; tail -c 600 "$R/parity_bf16.json"
  else
    echo "server did not come up"; tail -20 "$R/serve_qvl.log"
  fi
  wait
  python3 scripts/gpu/qwen_vl_long_context.py --combine "$R/long_context_bf16.json" "$R/long_context_int4.json" \
    --out "$R/qwen_vl_chat_long_context.json" | tail -3
  pack c ;;
p)
  mk 2b-bf16 qwen2-vl-2b bf16
  timeout 560 python3 scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --gpu-memory-utilization 0.3 \
    --kv-cache-gib 8 --out "$R/parity_bf16.json" >"$R/parity.log" 2>&1; status parity $?; tail -c 600 "$R/parity_bf16.json"
  pack p ;;
e)
  timeout 580 python3 benchmarks/serve_bench.py --ckpt "$CK/2b-gptq" --concurrency 16 64 \
    --extra-sides ours_ahead ours_paced --out-dir "$R/serve" >"$R/serve_bench.log" 2>&1
  status serve_bench $?; tail -6 "$R/serve_bench.log"
  pack e ;;
h)
  timeout 270 python3 scripts/gpu/encode_ahead_check.py --ckpt "$CK/2b-bf16" --kv-cache-gib 8 \
    --out "$R/encode_ahead_check.json" >"$R/encode_ahead_check.log" 2>&1; status encode_ahead $?
  tail -c 800 "$R/encode_ahead_check.json"; pack h
  timeout 300 python3 benchmarks/serve_bench.py --ckpt "$CK/2b-gptq" --concurrency 64 --image-size 1920x1080 \
    --out-dir "$R/serve_photos" >"$R/serve_photos.log" 2>&1; status serve_photos $?; tail -4 "$R/serve_photos.log"
  pack h ;;
w)
  /usr/bin/time -v python3 -m qwenvl_vllm.cli make-checkpoint --model qwen2-vl-72b --quant gptq-int4 --device cuda \
    --out "$CK/72b-gptq" >"$R/mk_72b.log" 2>&1; status mk_72b $?; tail -20 "$R/mk_72b.log"; du -sh "$CK/72b-gptq"
  pack w ;;
x)
  timeout 590 python3 benchmarks/compare.py --ckpt "$CK/72b-gptq" --workloads W1 --num-requests 64 --tag _72b \
    --kv-cache-gib 16 --out-dir "$R/offline_72b" >"$R/compare_72b.log" 2>&1; status compare_72b $?
  tail -6 "$R/compare_72b.log"; pack x ;;
t)
  timeout 200 python3 benchmarks/vision_tower.py --out-dir "$R/tower" --iters 5 >"$R/tower.log" 2>&1; status tower $?
  pack t; mk 2b-bf16 qwen2-vl-2b bf16
  QWENVL_VLLM_VIT_FP8=1 timeout 380 python3 scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" \
    --gpu-memory-utilization 0.3 --kv-cache-gib 8 --out "$R/parity_fp8_tower.json" >"$R/parity_fp8.log" 2>&1
  status parity_fp8 $?; tail -c 600 "$R/parity_fp8_tower.json"
  pack t ;;
esac
