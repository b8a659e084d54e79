#!/usr/bin/env bash
# This round's GPU checks and measurements (issues 9, 10, 12, 14), run after staging .gpu/partNN
# (../shared/gpu/README.md; the bundle carries Pillow 13.0, which the resize kernels reproduce) and carrying
# .gpu/install.sh and .gpu/nparts. One machine, calls back to back, each < 10 min (ROUND_BUDGET_S: seconds
# from the script's start, the install included; keep it ~30 s under the call's limit). Checkpoints live in
# /tmp/ckpt; results come back as $OUT/round_<call>.tgz. What each visit ran and found:
# benchmarks/results/<date>-h200-roundN/README.md.
#
# Next visit (in this order; carry .gpu/caches.tgz with the last part if a visit saved one with `v3`):
#   1. the README's main command itself (`ours_main`: QWENVL_VLLM_SCHEDULER=sliced_paced, two API servers,
#      every slicer default incl. the side stream) with ours and in-tree, c=1/16/64 (c=1 not run since round
#      14): `G3_CONCURRENCY="1 16 64" G3_SIDES=ours_main ... s1` on a fresh machine (~570 s cold; if that is
#      too long, c=1 alone in a second call), then offline W1 under the slicer (`QWENVL_VLLM_SCHEDULER=sliced_paced
#      O5_TAG=_sliced ... o5`: is the slicer fit to be the plugin's own default?).
#      Round 23: the side stream's A/B (c=64 1.05x req/s, TTFT p99 -3%) and, in one run with ours and in-tree,
#      c=16 16.7 ms, c=64 28.3 ms at 1.13x ours, TTFT p99 1724 against 1728; `pc` passed (greedy, caches).
#   2. `wt` (the warm-up test alone, 540 s; not run since round 20); if it passes for both models, `ow`.
#   3. with time left: the profiled slicer (`G3_SIDES=ours_sliced_paced_api2 G3_PROFILE=ours_sliced_paced_api2
#      G3_PROFILE_STACK=1 G3_FLAGS="--no-ours --no-in-tree" ... g3`), `ps`, then `t12` (round 19's plan).
#   Done in round 23: s1 (SS_FIRST, the side-stream A/B) / s1 (side stream, ours, in-tree) / pc (PC_SIDE=1).
#   The machine is released ~30 s after a call: a call issued later starts a fresh one (stage again, cold).
#   Done in round 22: s1 / g3 / s1 (FULL graphs, small 12, t18; no caches: the first start per machine ~200 s;
#   the machine was taken back once mid-call: stage again at once, the next call is cold).
#   Done in round 21: s1 / g3 x3 (issue 12 with in-tree, the by-image A/B: one cost won, the sync check).
#   Done in round 20: in-tree's 4032x3024 c=64 (`i3`), the caches (`v3`).
#   After the visit: if `v3` returned gpu_caches.tgz, copy it to .gpu/caches.tgz; later visits carry it with
#   the last .gpu/partNN (vision_round.sh unpacks it after install), so that the first engine starts warm. If
#   an engine then fails at its start (a cache from another stack), delete .gpu/caches.tgz.
#   Staging: the tracked tree is ~9 MiB, so the parts must be <= 50 MB (`split -b 50M`: nine parts).
#   A fresh checkout has no .gpu/ (~1 min): `bash ../shared/gpu/bundle.sh pillow==13.0.0 && rm .gpu/part* &&
#   tar cf - -C .gpu wheels | split -b 50M -d - .gpu/part && ls .gpu/part* | wc -l > .gpu/nparts`.
#   Done in round 16: d8 (greedy GPU vs CPU pixels: pass; fp8 W1), the host front end, the TTFT breakdown.
#   Done in round 17: the pin probe (no `tm`: the pageable copy is slower), the host front end with the
#   placeholder search (12 MP 0.44 ms over decode), W2 ours only.
#   Done in round 18: W2 ours vs in-tree (v2), 12 MP photos (p7, in-tree's c=64 cut), 1080p c=64 (ph).
#
# Calls (the case labels below; each line says what runs, in order):
#   a   checkpoints, GPU tests, W1 of ours with the fp8 tower
#   b   TTFT breakdown of one W1 request, ours vs in-tree; W1 of ours with device pixels and tower graphs off;
#       the front end on this machine's CPU
#   c   W1, W2, W3 ours vs in-tree in one compare.py run (a cold in-tree compile takes >2 min)
#   d1  fresh 2B checkpoint, scripts/gpu/device_pixels_greedy.py, offline W3 ours vs in-tree
#   tm  the TTFT breakdown with QWENVL_VLLM_MODEL_COPIES_PIXELS=1 (2B checkpoint first)
#   wt  the tower warm-up's GPU test, Qwen2-VL then Qwen-VL v1 (540 s)
#   ow  fresh 2B checkpoint, offline W1 with QWENVL_VLLM_WARM_TOWER=1 vs in-tree (after `wt` passed for both)
#   v2  fresh 2B checkpoint, W2 ours vs in-tree (compare.py), then the tower warm-up's GPU test with the time left
#   v3  the warm-up's GPU test beside a fresh 2B checkpoint, 4032x3024 c=64 in-tree alone (one wave), the caches
#   i3  4032x3024 c=64 in-tree alone, one wave (2B checkpoint first: after v3)
#   w2  fresh 2B checkpoint, benchmarks/pin_probe.py, our front end on the host's CPU, W2 ours vs in-tree (compare.py)
#   d8  fresh 2B checkpoint, scripts/gpu/device_pixels_greedy.py, then f8's fp8-tower W1 vs in-tree
#   e   `vllm serve` c=16/64: ours, encoding ahead, encoder-paced, in-tree
#   f3  client_overhead.py (no engine), fresh 2B checkpoint, then g3's serve sides
#   f4  the front end on this host's CPU, then g3's serve sides
#   fe  the front end per image on this host's CPU (frontend_speed.py: ours and in-tree)
#   f8  fresh 2B checkpoint, then W1 with the fp8 tower (ours) vs in-tree, one compare.py run
#   fp  fe (FE_SIDES: frontend_speed.py's --sides), then `vllm serve` c=64 with 1920x1080 photos, ours vs in-tree
#   g1  checkpoints; GPU tests, encode-ahead check, parity and short compiling runs side by side
#   g2  W1 and W3 ours vs in-tree, the tower's attention kernels alone, the TTFT breakdown
#   g3  `vllm serve` sides: G3_SIDES beside ours, in-tree last unless G3_FLAGS=--no-in-tree (G3_CONCURRENCY,
#       G3_CLIENT_PROCS, G3_PROFILE=<side>: a torch-profiler window of its c=64)
#   g4  W1 offline with ours encoding ahead vs in-tree; the TTFT breakdown
#   h   encode-ahead correctness, then `vllm serve` c=64 with 1920x1080 photos, ours vs in-tree
#   k1  checkpoints (72B unless K1_72B=0) beside the attention kernels; GPU tests, encode-ahead check, fp8 parity
#   k2  checkpoints (2B on the CPU, 72B GPTQ-Int4 on the GPU), GPU tests, encode-ahead check
#   k8  the 2B and 72B GPTQ checkpoints side by side, then fe
#   l1  2B checkpoint beside the GPU tests, then g3's serve sides
#   l2  2B checkpoints beside the GPU tests, the slicing scheduler's encode-ahead check
#   n3  TTFT breakdown, then `vllm serve` c=64 with 1920x1080 photos, ours vs in-tree
#   n4  TTFT breakdown, then 1920x1080 photos at c=1/16/64 (PHOTO_SIDES: more serve sides of ours)
#   o5  offline W1 ours vs in-tree under the call environment's plugin settings (O5_TAG names the files)
#   o6  offline W1 ours vs in-tree, then the GPU tests with the time left
#   p   Qwen2-VL parity (transformers, in-tree greedy) with the current defaults
#   p5  4032x3024 photos at c=1/16, ours vs in-tree (PHOTO_FLAGS=--no-ours: in-tree alone)
#   p7  4032x3024 photos at c=1/16/64, ours vs in-tree, one wave of requests per level (2B checkpoint first)
#   p6  fresh 2B checkpoint, then p5's photos;  q6: fresh 2B checkpoint, then n4's photos
#   ph  2B checkpoint, then `vllm serve` c=64 with 1920x1080 photos, ours vs in-tree
#   s1  fresh 2B checkpoint, then g3's serve sides and each step trace's fit
#   pc  the paced slicer's greedy parity and cache check vs the default path (PC_SIDE=1: on the side stream)
#   s72 `vllm serve` of the 72B checkpoint (after k2 or k8), ours vs in-tree at c=4 (issue 14 part 1)
#   t   the vision tower benchmark, then the fp8 tower's parity vs transformers
#   t12 the vision tower benchmark at 1920x1080 and 4032x3024 only
#   ps  4032x3024 photos at c=1/16 (one wave) through ours and the paced slicer, no in-tree
#   w   the 72B GPTQ-Int4 checkpoint written on the GPU;  x: W1 on it, ours vs in-tree
set -uo pipefail
source "$(dirname "$0")/common.sh"
RET=$OUT; R=/tmp/round; mkdir -p "$R"; OUT=$R
bash .gpu/install.sh 2>&1 | tail -1 || { echo "install failed: a fresh machine? stage .gpu/partNN first"; exit 3; }
restore_caches
pack() { tar czf "$RET/round_$1.tgz" -C "$R" .; }
END=${ROUND_BUDGET_S:-570}  # seconds from the script's start (the install counts): keep it ~30 s under the call's limit
cap() { local left=$((END - SECONDS)); echo $(( left < $1 ? (left > 5 ? left : 5) : $1 )); }  # a step's timeout
gpu_tests() {  # timeout
  timeout "$1" python3 -m pytest -q tests/gpu/test_vision_kernels_gpu.py tests/gpu/test_kernels_gpu.py \
    tests/gpu/test_qwen2_vl_vision_gpu.py tests/gpu/test_writer_gpu.py tests/gpu/test_profile_digest_gpu.py \
    tests/gpu/test_device_pixels_gpu.py tests/gpu/test_tower_warmup_gpu.py tests/gpu/test_host_scopes_gpu.py tests/gpu/test_slice_stream_gpu.py \
    >"$R/gpu_tests.log" 2>&1; status gpu_tests $?; tail -2 "$R/gpu_tests.log"
}
encode_ahead_check() {  # timeout
  timeout "$1" python3 scripts/gpu/encode_ahead_check.py --ckpt "$CK/${EA_CKPT:-2b-bf16}" --kv-cache-gib 8 \
    --scheduler-cls "${EA_SCHEDULER:-qwenvl_vllm.serving.encode_ahead.EncodeAheadAsyncScheduler}" \
    --out "$R/encode_ahead_check.json" >"$R/encode_ahead_check.log" 2>&1; status encode_ahead $?
}
mk_72b() {  # timeout: Qwen2-VL-72B GPTQ-Int4 written on the GPU
  timeout "$1" python3 -m qwenvl_vllm.cli make-checkpoint --model qwen2-vl-72b --quant gptq-int4 --device cuda \
    --out "$CK/72b-gptq" >"$R/mk_72b.log" 2>&1; status mk_72b $?; echo "72B at ${SECONDS}s"; du -sh "$CK/72b-gptq"
}
serve_sides() {  # timeout: `vllm serve` of G3_SIDES beside ours (and in-tree last unless G3_FLAGS=--no-in-tree)
  timeout "$1" python3 benchmarks/serve_bench.py --ckpt "$CK/2b-gptq" --concurrency ${G3_CONCURRENCY:-16 64} \
    --in-tree-last ${G3_FLAGS:-} --client-processes "${G3_CLIENT_PROCS:-4}" --extra-sides ${G3_SIDES:-ours_ahead_2k ours_ahead_paced_1k} --out-dir "$R/serve" \
    ${G3_PROFILE:+--profile-side $G3_PROFILE --profile-concurrency 64} ${G3_PROFILE_STACK:+--profile-stack} \
    >"$R/serve_bench.log" 2>&1; status serve_bench $?; tail -8 "$R/serve_bench.log"
}
greedy_pixels() {  # timeout: issue 10's GPU pixels vs CPU pixels, greedy (identical ids and logprobs)
  timeout "$1" python3 scripts/gpu/device_pixels_greedy.py --ckpt "$CK/2b-gptq" --kv-cache-gib 8 \
    --out "$R/device_pixels_greedy.json" >"$R/device_pixels_greedy.log" 2>&1; status device_pixels_greedy $?
  tail -c 400 "$R/device_pixels_greedy.json"
}
fp8_w1() {  # timeout: issue 9's fp8 tower option's W1 (the tower is never GPTQ-quantized) vs in-tree, one run
  QWENVL_VLLM_VIT_FP8=1 timeout "$1" python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W1 \
    --tag _fp8 --out-dir "$R/offline_fp8" >"$R/compare_fp8.log" 2>&1; status compare_fp8 $?
  tail -4 "$R/compare_fp8.log"
}
fresh_2b() { mk 2b-gptq qwen2-vl-2b gptq-int4 --device cpu; echo "== ready at ${SECONDS}s"; }  # 2B GPTQ checkpoint
warmup_tests() {  # seconds: the tower warm-up's GPU test, Qwen2-VL first, then Qwen-VL v1 with the time left
  local stop=$((SECONDS + $1)) model left
  for model in qwen2 "not qwen2"; do
    left=$((stop - SECONDS)); [ "$left" -gt 30 ] || { echo "== tower_warmup_gpu ($model): no time left"; continue; }
    timeout "$(cap "$left")" python3 -m pytest -q -s tests/gpu/test_tower_warmup_gpu.py -k "$model" \
      >>"$R/tower_warmup_gpu.log" 2>&1; status "tower_warmup_gpu ($model)" $?; done
  grep -E "passed|failed|Error" "$R/tower_warmup_gpu.log" | tail -6
}
photos() {  # size concurrencies timeout: `vllm serve` with JPEG photos of that size, ours vs in-tree
  timeout "$3" python3 benchmarks/serve_bench.py --ckpt "$CK/2b-gptq" --concurrency $2 --image-size "$1" \
    --waves "${PHOTO_WAVES:-4}" \
    ${PHOTO_SIDES:+--extra-sides $PHOTO_SIDES} ${PHOTO_FLAGS:-} --out-dir "$R/serve_photos" >"$R/serve_photos_$1.log" 2>&1
  status "serve_photos_$1" $?
  tail -4 "$R/serve_photos_$1.log"
}
case ${1:?call a, b, c, p, e, h, w, x, s72, t, g1, g2, g3, g4, k1, k2, l1, l2, n3, n4, o5, o6, p5, p6, pc, q6, f3, f4, fe, fp, f8, k8, d1, d8, v2, v3, i3, w2, wt, ow, tm, p7, s1, t12, ps or ph} in
g1)
  mk 2b-gptq qwen2-vl-2b gptq-int4 --device cpu & mk 2b-bf16 qwen2-vl-2b bf16 & wait; echo "== checkpoints at ${SECONDS}s"
  ( gpu_tests "$(cap 200)"; encode_ahead_check "$(cap 270)" ) &
  ( timeout "$(cap 540)" python3 scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --gpu-memory-utilization 0.3 \
      --kv-cache-gib 8 --out "$R/parity_bf16.json" >"$R/parity.log" 2>&1; status parity $? ) &
  ( for impl in in_tree ours; do
      timeout "$(cap 260)" python3 benchmarks/throughput.py --ckpt "$CK/2b-gptq" --workloads W1 W3 --impl $impl \
        --num-requests 8 --gpu-memory-utilization 0.3 --out-dir "$R/warm" >"$R/warm_$impl.log" 2>&1
      status "warm_$impl" $?; done ) &
  wait; echo "== done at ${SECONDS}s"; tail -c 500 "$R/parity_bf16.json"; tail -c 400 "$R/encode_ahead_check.json"
  pack g1 ;;
g2)
  timeout "$(cap 400)" python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W1 W3 --out-dir "$R/offline" \
    >"$R/compare.log" 2>&1; status compare $?; tail -6 "$R/compare.log"; pack g2
  timeout "$(cap 90)" python3 benchmarks/attention_kernels.py --out "$R/attention_kernels.json" >"$R/attn.log" 2>&1
  status attention_kernels $?; pack g2
  timeout "$(cap 300)" python3 benchmarks/ttft_breakdown.py --ckpt "$CK/2b-gptq" --out "$R/ttft_breakdown.json" \
    >"$R/ttft_breakdown.log" 2>&1; status ttft_breakdown $?; tail -c 700 "$R/ttft_breakdown.json"
  pack g2 ;;
k1)
  mk 2b-gptq qwen2-vl-2b gptq-int4 --device cpu & p2=$!; mk 2b-bf16 qwen2-vl-2b bf16 & p3=$!
  # the GPU is idle while the 2B checkpoints are drawn on the CPU: time the attention kernels there
  timeout "$(cap 90)" python3 benchmarks/attention_kernels.py --out "$R/attention_kernels.json" >"$R/attn.log" 2>&1
  status attention_kernels $?
  [ "${K1_72B:-1}" = 1 ] && mk_72b "$(cap 550)" &
  wait $p2 $p3; echo "== 2B checkpoints at ${SECONDS}s"
  ( gpu_tests "$(cap 200)"; encode_ahead_check "$(cap 270)" ) &
  ( QWENVL_VLLM_VIT_FP8=1 timeout "$(cap 540)" python3 scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" \
      --skip-in-tree --gpu-memory-utilization 0.3 --kv-cache-gib 8 --out "$R/parity_fp8_tower.json" >"$R/parity_fp8.log" 2>&1
    status parity_fp8 $? ) &
  wait; echo "== done at ${SECONDS}s"; tail -c 400 "$R/parity_fp8_tower.json"; tail -c 300 "$R/encode_ahead_check.json"
  tail -3 "$R/mk_72b.log"; df -h /tmp | tail -1
  pack k1 ;;
k2)
  mk 2b-gptq qwen2-vl-2b gptq-int4 --device cpu & mk 2b-bf16 qwen2-vl-2b bf16 & wait
  echo "== 2B checkpoints at ${SECONDS}s"; df -h /tmp | tail -1  # 72B (~42 GB) after them: the disk is 64 GiB
  mk_72b "$(cap 550)" &
  gpu_tests "$(cap 200)"; pack k2
  encode_ahead_check "$(cap 270)"
  wait; echo "== done at ${SECONDS}s"; tail -c 300 "$R/encode_ahead_check.json"; tail -3 "$R/mk_72b.log"
  df -h /tmp | tail -1; pack k2 ;;
g4)
  timeout "$(cap 300)" python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W1 --tag _ours_ahead \
    --ours-scheduler-cls qwenvl_vllm.serving.encode_ahead.EncodeAheadAsyncScheduler --out-dir "$R/offline_ahead" \
    >"$R/compare_ahead.log" 2>&1; status compare_ahead $?; tail -4 "$R/compare_ahead.log"; pack g4
  timeout "$(cap 270)" python3 benchmarks/ttft_breakdown.py --ckpt "$CK/2b-gptq" --out "$R/ttft_breakdown.json" \
    >"$R/ttft_breakdown.log" 2>&1; status ttft_breakdown $?; tail -c 700 "$R/ttft_breakdown.json"
  pack g4 ;;
g3)
  # shorter leases: G3_CONCURRENCY="64" G3_SIDES="ours_ahead"
  serve_sides "$(cap 570)"; pack g3 ;;
l1)
  mk 2b-gptq qwen2-vl-2b gptq-int4 --device cpu & gpu_tests "$(cap 150)"; wait; echo "== ready at ${SECONDS}s"; pack l1
  serve_sides "$(cap 570)"; pack l1 ;;
l2)
  mk 2b-gptq qwen2-vl-2b gptq-int4 --device cpu & mk 2b-bf16 qwen2-vl-2b bf16 & gpu_tests "$(cap 150)"; wait
  echo "== ready at ${SECONDS}s"; pack l2
  EA_SCHEDULER=qwenvl_vllm.serving.encode_ahead.EncodeAheadSlicedAsyncScheduler encode_ahead_check "$(cap 300)"
  tail -c 300 "$R/encode_ahead_check.json"; pack l2 ;;
n3)
  timeout "$(cap 280)" python3 benchmarks/ttft_breakdown.py --ckpt "$CK/2b-gptq" --out "$R/ttft_breakdown.json" \
    >"$R/ttft_breakdown.log" 2>&1; status ttft_breakdown $?; tail -c 900 "$R/ttft_breakdown.json"; pack n3
  photos 1920x1080 64 "$(cap 400)"
  pack n3 ;;
n4)
  timeout "$(cap 200)" python3 benchmarks/ttft_breakdown.py --ckpt "$CK/2b-gptq" --out "$R/ttft_breakdown.json" \
    >"$R/ttft_breakdown.log" 2>&1; status ttft_breakdown $?; tail -c 900 "$R/ttft_breakdown.json"; pack n4
  photos 1920x1080 "1 16 64" "$(cap 560)"; pack n4 ;;
o5)
  # offline W1 ours vs in-tree under the plugin settings this call's environment sets (a candidate default)
  timeout "$(cap 400)" python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W1 --tag "${O5_TAG:-_o5}" \
    --out-dir "$R/offline_o5" >"$R/compare_o5.log" 2>&1; status compare_o5 $?; tail -4 "$R/compare_o5.log"; pack o5 ;;
p7)
  fresh_2b; PHOTO_WAVES=1 photos 4032x3024 "1 16 64" "$(cap 570)"; pack p7 ;;
p5)
  photos 4032x3024 "1 16" "$(cap 570)"; pack p5 ;;
q6)
  # a fresh machine: the 2B GPTQ checkpoint, then n4's photos (1920x1080 at c=1/16/64, ours vs in-tree)
  fresh_2b
  photos 1920x1080 "1 16 64" "$(cap 560)"; pack q6 ;;
p6)
  # a fresh machine: the 2B GPTQ checkpoint, then p5's photos (4032x3024 at c=1/16, ours vs in-tree)
  fresh_2b
  photos 4032x3024 "1 16" "$(cap 565)"; pack p6 ;;
f3)
  # a fresh machine: what the client and a Python streaming server add to ITL on this host's CPUs (no
  # engine, ~40 s; F3_PROCS: the client process counts), the 2B GPTQ checkpoint (kept if there), then g3's
  # `vllm serve` sides (G3_SIDES, G3_CONCURRENCY, G3_FLAGS)
  timeout 120 python3 benchmarks/client_overhead.py --processes ${F3_PROCS:-1 4} >"$R/client_overhead.jsonl" \
    2>"$R/client_overhead.log"
  status client_overhead $?; cut -c1-400 "$R/client_overhead.jsonl"
  fresh_2b
  serve_sides "$(cap 570)"; pack f3 ;;
s1)
  # a fresh machine: the 2B GPTQ checkpoint, then g3's `vllm serve` sides (G3_SIDES, G3_CONCURRENCY, G3_FLAGS);
  # last, each step trace's fit (is this host's tower step host-bound?)
  # SS_FIRST=1: the slice-stream GPU test beside the checkpoint; the side-stream serve side only if it passed
  if [ -n "${SS_FIRST:-}" ]; then
    ( timeout 150 python3 -m pytest -q tests/gpu/test_slice_stream_gpu.py >"$R/slice_stream_gpu.log" 2>&1
      echo $? >"$R/slice_stream_gpu.rc" ) &
    fresh_2b; wait; tail -2 "$R/slice_stream_gpu.log"
    [ "$(cat "$R/slice_stream_gpu.rc")" = 0 ] || G3_SIDES=$(echo "${G3_SIDES:-}" | sed 's/ours_sliced_paced_side_api2//')
    [ -n "${G3_SIDES// }" ] || G3_SIDES=" "  # a space: no extra sides (unset would run the default ones)
  else fresh_2b; fi
  serve_sides "$(cap 570)"; pack s1
  python3 benchmarks/step_trace_report.py "$R/serve" 2>/dev/null | grep -E "^###|^fit" ;;
pc)
  # issue 12's correctness for the paced slicer under its defaults (FULL graphs, small target 12; PC_SIDE=1:
  # its slices on the side stream): greedy outputs vs the default path, and the encoder caches and the
  # slicer's queue empty after generate and after an abort mid-encode (encode_ahead_check.py), on the 2B
  # GPTQ checkpoint (s1's when the machine kept it)
  fresh_2b
  [ -z "${PC_SIDE:-}" ] || export QWENVL_VLLM_SLICES_ON_SIDE_STREAM=1
  EA_CKPT=2b-gptq EA_SCHEDULER=qwenvl_vllm.serving.encode_ahead.EncodeAheadSlicedPacedAsyncScheduler \
    encode_ahead_check "$(cap 560)"
  tail -c 900 "$R/encode_ahead_check.json"; pack pc ;;
o6)
  # offline W1 ours vs in-tree (compare.py: req/s and single-request TTFT; round 14's 340-s cap ended it in
  # in-tree's cold start, so the TTFT breakdown moved to n3/n4)
  timeout "$(cap 500)" python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W1 --tag "${O5_TAG:-_o6}" \
    --out-dir "$R/offline_o6" >"$R/compare_o6.log" 2>&1; status compare_o6 $?; tail -4 "$R/compare_o6.log"; pack o6
  gpu_tests "$(cap 565)"; pack o6 ;;  # with what time is left (the video layout of round 14 is in them)
d1)
  # issue 10's greedy check (GPU pixels vs CPU pixels, 32 media prompts that all need resizing; strict:
  # identical ids and logprobs) on a fresh machine's 2B GPTQ checkpoint, then offline W3 ours vs in-tree
  fresh_2b; greedy_pixels "$(cap 300)"; pack d1
  timeout "$(cap 565)" python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W3 --tag _d1 \
    --out-dir "$R/offline_d1" >"$R/compare_d1.log" 2>&1; status compare_d1 $?; tail -4 "$R/compare_d1.log"; pack d1 ;;
k8)
  # the 2B GPTQ checkpoint on the CPU beside the 72B GPTQ-Int4 one on the GPU (for s72), then fe's front end
  # on the machine's CPUs once the writers are done (nothing else running beside it)
  mk 2b-gptq qwen2-vl-2b gptq-int4 --device cpu & mk_72b "$(cap 400)" & wait; pack k8
  timeout "$(cap 560)" python3 benchmarks/frontend_speed.py --out "$R/frontend_speed.json" >"$R/frontend.log" 2>&1
  status frontend_speed $?; tail -c 400 "$R/frontend_speed.json"; df -h /tmp | tail -1; pack k8 ;;
f8)
  # issue 9: the fp8 tower option's W1, ours (QWENVL_VLLM_VIT_FP8=1; the tower is never GPTQ-quantized) vs
  # in-tree in one compare.py run; on a fresh machine the checkpoint first
  fresh_2b; fp8_w1 "$(cap 565)"; pack f8 ;;
tm)
  fresh_2b
  QWENVL_VLLM_MODEL_COPIES_PIXELS=1 timeout "$(cap 560)" python3 benchmarks/ttft_breakdown.py --ckpt "$CK/2b-gptq" \
    --repeats 8 --out "$R/ttft_breakdown_model_copies.json" >"$R/ttft_breakdown.log" 2>&1
  status ttft_breakdown $?; tail -c 1200 "$R/ttft_breakdown_model_copies.json"; pack tm ;;
wt)
  # the tiny engines write their own checkpoints; four engine starts (warm and cold control per model) took
  # over 220 s on round 20's fresh machine without finishing one test
  warmup_tests 540; pack wt ;;
ow)
  fresh_2b
  QWENVL_VLLM_WARM_TOWER=1 timeout "$(cap 565)" python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W1 \
    --tag _warm_tower --out-dir "$R/offline_wt" >"$R/compare_wt.log" 2>&1; status compare_wt $?
  tail -4 "$R/compare_wt.log"; pack ow ;;
v3)
  # the checkpoint on the CPU beside the warm-up tests' tiny engines; the caches last, once both ours and
  # in-tree have compiled into them
  fresh_2b & warmup_tests 220; wait; pack v3  # in-tree's cold 12 MP c=64: ~260 s, estimated
  left=$((END - SECONDS - 45)); PHOTO_WAVES=1 PHOTO_FLAGS=--no-ours photos 4032x3024 64 "$((left > 5 ? left : 5))"
  pack v3
  save_caches "$RET/gpu_caches.tgz" "$(cap 40)"; pack v3 ;;
i3)
  PHOTO_WAVES=1 PHOTO_FLAGS=--no-ours photos 4032x3024 64 "$(cap 540)"; pack i3 ;;
v2)
  fresh_2b
  timeout "$(cap 500)" python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W2 --tag _w2 \
    --out-dir "$R/offline_w2" >"$R/compare_w2.log" 2>&1; status compare_w2 $?; tail -4 "$R/compare_w2.log"; pack v2
  save_caches "$RET/gpu_caches.tgz" "$(cap 90)"  # both engines' kernels are in them now
  warmup_tests 560; pack v2 ;;
w2)
  fresh_2b
  timeout 120 python3 benchmarks/pin_probe.py --out "$R/pin_probe.json" >"$R/pin_probe.log" 2>&1
  status pin_probe $?; tail -c 900 "$R/pin_probe.json"; pack w2
  timeout "$(cap 150)" python3 benchmarks/frontend_speed.py --sides ours_device_pixels --out "$R/frontend_speed.json" \
    >"$R/frontend.log" 2>&1; status frontend_speed $?; tail -c 300 "$R/frontend_speed.json"; pack w2
  timeout "$(cap 565)" python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W2 --tag _w2 \
    --out-dir "$R/offline_w2" >"$R/compare_w2.log" 2>&1; status compare_w2 $?; tail -4 "$R/compare_w2.log"; pack w2 ;;
d8)
  # a fresh machine: issue 10's greedy check, then issue 9's fp8-tower W1 vs in-tree (W3 has round 3's run)
  fresh_2b; greedy_pixels "$(cap 280)"; pack d8
  fp8_w1 "$(cap 565)"; pack d8 ;;
fp)
  # issue 10: the front end on this host's CPU, then `vllm serve` c=64 with 1920x1080 photos, ours vs in-tree
  # (round 11's 1.11x predates the LM's 2048-token graphs)
  # (frontend_speed.py took ~255 s on round 15's host: three sides' vLLM imports, 12 MP photos in-tree)
  timeout "$(cap 300)" python3 benchmarks/frontend_speed.py --out "$R/frontend_speed.json" ${FE_SIDES:+--sides $FE_SIDES} \
    >"$R/frontend.log" 2>&1; status frontend_speed $?; tail -c 400 "$R/frontend_speed.json"; pack fp
  photos 1920x1080 64 "$(cap 565)"; pack fp ;;
fe)
  timeout "$(cap 560)" python3 benchmarks/frontend_speed.py --out "$R/frontend_speed.json" >"$R/frontend.log" 2>&1
  status frontend_speed $?; tail -c 400 "$R/frontend_speed.json"; pack fe ;;
f4)
  # after f3: the front end per image on this host's CPU (issue 10's API-server ms, ours and in-tree), then
  # g3's `vllm serve` sides
  timeout 270 python3 benchmarks/frontend_speed.py --out "$R/frontend_speed.json" >"$R/frontend.log" 2>&1  # over 150 s on the H200 host
  status frontend_speed $?; pack f4
  serve_sides "$(cap 570)"; pack f4 ;;
ph)
  mk 2b-gptq qwen2-vl-2b gptq-int4 --device cpu
  photos 1920x1080 64 "$(cap 540)"
  pack ph ;;
a)
  mk 2b-gptq qwen2-vl-2b gptq-int4 & mk 2b-bf16 qwen2-vl-2b bf16 & wait
  gpu_tests 150; pack a; mkdir -p "$R/fp8_tower"
  QWENVL_VLLM_VIT_FP8=1 timeout 200 python3 benchmarks/throughput.py --ckpt "$CK/2b-gptq" --workloads W1 \
    --impl ours --out-dir "$R/fp8_tower" >"$R/w1_fp8.log" 2>&1; status w1_fp8_tower $?
  tail -c 400 "$R/fp8_tower/W1_ours.json"; pack a ;;
c)
  timeout 590 python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W1 W2 W3 --out-dir "$R/offline" \
    >"$R/compare.log" 2>&1; status compare $?; tail -6 "$R/compare.log"
  pack c ;;
b)
  timeout 300 python3 benchmarks/ttft_breakdown.py --ckpt "$CK/2b-gptq" --out "$R/ttft_breakdown.json" \
    >"$R/ttft_breakdown.log" 2>&1; status ttft_breakdown $?; tail -c 700 "$R/ttft_breakdown.json"; pack b
  mkdir -p "$R/cpu_pixels_eager"
  QWENVL_VLLM_DEVICE_PIXELS=0 QWENVL_VLLM_VIT_GRAPH_MAX_PATCHES=0 timeout 150 python3 benchmarks/throughput.py \
    --ckpt "$CK/2b-gptq" --workloads W1 --impl ours --out-dir "$R/cpu_pixels_eager" >"$R/w1_cpu_pixels.log" 2>&1
  status w1_cpu_pixels_eager $?; tail -c 600 "$R/cpu_pixels_eager/W1_ours.json"
  timeout 120 python3 benchmarks/frontend_speed.py --out "$R/frontend_speed.json" >"$R/frontend.log" 2>&1
  status frontend $?; pack b ;;
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
  encode_ahead_check 270
  tail -c 800 "$R/encode_ahead_check.json"; pack h
  photos 1920x1080 64 300
  pack h ;;
w)
  /usr/bin/time -v python3 -m qwenvl_vllm.cli make-checkpoint --model qwen2-vl-72b --quant gptq-int4 --device cuda \
    --out "$CK/72b-gptq" >"$R/mk_72b.log" 2>&1; status mk_72b $?; tail -20 "$R/mk_72b.log"; du -sh "$CK/72b-gptq"
  pack w ;;
s72)
  # issue 14 part 1's `vllm serve` with the 72B GPTQ-Int4 checkpoint (written by k2), ours vs in-tree, c=4
  timeout "$(cap 560)" python3 benchmarks/serve_bench.py --ckpt "$CK/72b-gptq" --concurrency 4 \
    --out-dir "$R/serve_72b" >"$R/serve_72b.log" 2>&1; status serve_72b $?; tail -4 "$R/serve_72b.log"
  pack s72 ;;
x)
  timeout 590 python3 benchmarks/compare.py --ckpt "$CK/72b-gptq" --workloads W1 --num-requests 64 --tag _72b \
    --kv-cache-gib 16 --out-dir "$R/offline_72b" >"$R/compare_72b.log" 2>&1; status compare_72b $?
  tail -6 "$R/compare_72b.log"; pack x ;;
t)
  timeout 200 python3 benchmarks/vision_tower.py --out-dir "$R/tower" --iters 5 --attn-backends FLASHINFER TRITON_ATTN \
    >"$R/tower.log" 2>&1; status tower $?
  pack t; mk 2b-bf16 qwen2-vl-2b bf16
  QWENVL_VLLM_VIT_FP8=1 timeout 380 python3 scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --skip-in-tree \
    --gpu-memory-utilization 0.3 --kv-cache-gib 8 --out "$R/parity_fp8_tower.json" >"$R/parity_fp8.log" 2>&1
  status parity_fp8 $?; tail -c 600 "$R/parity_fp8_tower.json"
  pack t ;;
ps)
  PHOTO_WAVES=1 PHOTO_SIDES=ours_sliced_paced_api2 PHOTO_FLAGS=--no-in-tree photos 4032x3024 "1 16" "$(cap 565)"
  pack ps ;;
t12)
  # the isolated tower at 1920x1080 and 4032x3024 (12 MP photos' serve numbers: is the ratio the tower's?)
  timeout "$(cap 400)" python3 benchmarks/vision_tower.py --out-dir "$R/tower" --iters 3 \
    --cases 1920x1080 4032x3024_single >"$R/tower.log" 2>&1; status tower $?; tail -12 "$R/tower.log"; pack t12 ;;
esac
