#!/usr/bin/env bash
# This round's GPU checks and measurements, run after `bash ../shared/gpu/bundle.sh pillow==13.0.0` (the GPU
# image's own Pillow is older; the resize kernels reproduce 13.0) and staging .gpu/partNN
# (../shared/gpu/README.md), carrying .gpu/install.sh and .gpu/nparts. One machine, calls back to back
# (checkpoints live in /tmp/ckpt); results in $OUT/round_<call>.tgz.
#   a  checkpoints, GPU tests (kernels, tower incl. the side-stream encode, writer on CUDA), W1 of ours with
#      the fp8 tower (~6 min)
#   c  W1, W2, W3 ours vs in-tree in one compare.py run (a cold in-tree compile takes >2 min) (~10 min)
#   b  the TTFT breakdown of one W1 request, ours vs in-tree; W1 of ours with device pixels and tower
#      graphs off; the front-end benchmark on this machine's CPU (~7 min)
#   p  Qwen2-VL parity (transformers, in-tree greedy) with this round's defaults (device pixels, tower graphs)
#   e  `vllm serve` c=16/64: ours, ours encoding ahead, ours encoder-paced, in-tree (~9 min)
#   h  encode-ahead correctness (greedy vs the default scheduler, encoder caches after finish and abort),
#      then `vllm serve` c=64 with 1920x1080 JPEG photos, ours vs in-tree (~8 min)
#   w  a Qwen2-VL-72B GPTQ-Int4 checkpoint written on the GPU (make-checkpoint --device cuda), its size
#   x  W1 (64 requests) on that 72B checkpoint, ours vs in-tree, one H200 (weights + KV from the start-up logs)
#   Calls for a lease of ~25 minutes (each < 10 min; the earlier calls warm vLLM's compile cache for the later):
#   g1 checkpoints; then side by side (nothing timed): GPU tests and the encode-ahead check, Qwen2-VL parity
#      with this round's defaults, and short W1/W3 runs of in-tree and ours that compile their engines
#   g2 W1 and W3 ours vs in-tree (compare.py), the tower's attention kernels alone, then the TTFT breakdown
#   g3 `vllm serve` c=16/64: ours, then ours encoding ahead (LM stream prioritised, one image per tower call)
#      with 2048-token steps, the same admitting one image per step, in-tree last (each side writes its
#      numbers as it ends; ~1m50 per warm side, in-tree cold ~2m30). G3_SIDES="ours_ahead ours_ahead_equal":
#      the A/B of the stream priority alone
#   n3 the TTFT breakdown (forward split by the runner's methods), then `vllm serve` c=64 with 1920x1080 JPEG
#      photos, ours vs in-tree (issue 10)
#   g4 W1 offline with ours encoding ahead (the tower beside the LM's steps) vs in-tree; the TTFT breakdown
#   k1 checkpoints (2B on the CPU while the attention kernels, FA3 fp8 included, are timed alone on the GPU;
#      72B GPTQ-Int4 written on the GPU beside the rest); then side by side: GPU tests and the encode-ahead
#      check, the fp8 tower's parity vs transformers (~9 min; K1_72B=0: without the 72B checkpoint)
#   ph a fresh machine's 2B GPTQ checkpoint, then `vllm serve` c=64 with 1920x1080 JPEG photos, ours vs in-tree
#   Next lease (fifth visit done: k1, g3, ph): stage, k1, `G3_CONCURRENCY=64 G3_SIDES="ours_ahead ours_api2
#      ours_ahead_api2" ... g3` (its JSON now holds the engine's share of long inter-token gaps beside the
#      client's, and two sides with two API-server processes: engine or API server?),
#      n3's TTFT breakdown, then k1 with the 72B checkpoint and x (the 72B W1), as time allows.
#   Sixth visit: k2, then `G3_CONCURRENCY=64 G3_SIDES="ours_traced ours_ahead ours_api2 ours_ahead_api2"
#      G3_FLAGS=--no-in-tree ... g3` (our schedulers' step traces beside the engine's and the client's gaps), x.
#   Next lease: `K1_72B=0 ... k1` (or k2 with the 72B checkpoint), then `G3_SIDES="ours_ahead_graphed
#      ours_ahead_paced_1k_g2k" ... g3` (c=16/64, in-tree last: 2048-token CUDA graphs and steps, encode
#      ahead, with and without one image per step; benchmarks/sched_sim.py ranks these first), then
#      `G3_FLAGS=--no-in-tree G3_SIDES="ours_g2k ours_paced_1k_g2k" ... g3`, then n3 (TTFT breakdown, photos).
#   k2 checkpoints (2B on the CPU, 72B GPTQ-Int4 on the GPU beside the rest), GPU tests and the encode-ahead check
#   s72 `vllm serve` of the 72B checkpoint (after k2), ours vs in-tree at c=4 (issue 14 part 1; ~6 min)
#   l1 the 2B GPTQ checkpoint beside the GPU tests, then g3's `vllm serve` sides (G3_SIDES, G3_CONCURRENCY)
#   Seventh visit: `G3_CONCURRENCY="1 16 64" G3_SIDES=ours_ahead_graphed ... l1` (in-tree last), then
#      `G3_FLAGS=--no-in-tree G3_SIDES="ours_ahead_paced_1k_g2k ours_g2k ours_paced_1k_g2k" ... g3`.
#   Eighth visit (ROUND_BUDGET_S=560: the install counts): `l2` (~5 min), then `G3_CONCURRENCY="1 16 64"
#      G3_SIDES="ours_sliced ours_sliced_flat" ... g3` (~8.5 min, in-tree last), then `G3_CONCURRENCY="16 64"
#      G3_FLAGS=--no-in-tree G3_SIDES="ours_sliced_28 ours_ahead_graphed" ... g3`, then n4 / p5 (issue 10).
#   Ninth visit: `G3_CONCURRENCY=64 G3_FLAGS=--no-in-tree G3_SIDES="ours_sliced_omp1 ours_sliced_profiled"
#      G3_PROFILE=ours_sliced_profiled ... l1` (one torch thread per process, and a torch-profiler window of
#      c=64 digested per step on a side of its own: where the ~8 ms per admitted image go, round-8 README;
#      every traced side's JSON also has host_ms_by_images_admitted), then `G3_CONCURRENCY="16 64"
#      G3_SIDES=ours_sliced_paced ... g3` (ours, one image admitted per step, in-tree last: the same-run
#      comparison; three sides at c=1/16/64 do not fit in one call), then `PHOTO_SIDES=ours_sliced_paced ... n4`;
#      `ours_sliced_paced_env` (the same through QWENVL_VLLM_SCHEDULER) checks the default-scheduler switch.
#   Ninth visit done (round9 README). Next: `G3_CONCURRENCY="16 64" G3_FLAGS=--no-in-tree
#      G3_SIDES="ours_sliced_paced ours_sliced_paced_eager_modules ours_sliced_paced_warm" ... l1` (are the
#      ramp's slow steps lazy kernel loading, and does QWENVL_VLLM_WARM_LOGITS remove them?), then the winner
#      with QWENVL_VLLM_TOWER_BACKLOG_REQUESTS=12 QWENVL_VLLM_TOWER_BACKLOG_SCALE=1.7 beside ours and in-tree (g3).
#   Tenth visit: that l1, then `G3_SIDES="ours_sliced_paced_warm_b12_s17" ... g3`, then `QWENVL_VLLM_SCHEDULER=sliced_paced
#      QWENVL_VLLM_WARM_LOGITS=1 QWENVL_VLLM_TOWER_BACKLOG_REQUESTS=12 QWENVL_VLLM_TOWER_BACKLOG_SCALE=1.7
#      O5_TAG=_paced_default ... o5` (offline W1 under the candidate default).
#   Tenth visit done (round10 README: the logits warm-up removed the ramp's slow steps, now the default).
#      The tenth visit's first call overran (the budget then started after the install) and lost its
#      sides; ROUND_BUDGET_S now counts from the script's start. Next (in this order, each < 10 min):
#      `G3_CONCURRENCY="16 64" G3_SIDES="ours_sliced_paced_b12_s17 ours_sliced_paced_b12_s17_api2"
#      ROUND_BUDGET_S=570 ... l1` (GPU tests incl. test_device_pixels_gpu.py: photos shipped uncopied;
#      then in-tree last: the same-run comparison; does a second API server take the client's ITL tail
#      down to the engine's steps?), `n4` (issue 10: TTFT breakdown, 1920x1080 photos at c=1/16/64),
#      `p5` (4032x3024 at c=1/16), then the `o5` call above.
#   Eleventh visit done (round11 README: l1, q6, p6; a second API server leaves c=64's client ITL p99 at 33 ms
#      while the engine's own, decode-weighted, is 27.5).
#      Next (issue 12 first): `G3_CONCURRENCY="1 16 64" G3_FLAGS=--no-in-tree G3_CLIENT_PROCS=4
#      G3_SIDES=ours_sliced_paced_b12_s17_api2 ROUND_BUDGET_S=570 ... f3` (c=64's client ITL p99 sat 5-6 ms
#      above the engine's decode-weighted step gap p99 with one API server and with two: is it the
#      benchmark's one client process? each level's JSON now has the client's event-loop lag), then
#      `G3_CONCURRENCY="1 16 64" G3_FLAGS=--no-in-tree G3_CLIENT_PROCS=4 G3_SIDES=ours_sliced_paced_api2 ... g3`
#      (the default budget: engine decode gap p99 25.4 ms at c=64 in round 10), then
#      `G3_CONCURRENCY="1 16 64" G3_FLAGS=--no-ours G3_CLIENT_PROCS=4 G3_SIDES=" " ... f4` (the front end on
#      the host's CPU, then in-tree on the same machine; c=1 is issue 10's single-request TTFT through the
#      server, ~10 s a side), then n4's TTFT breakdown, then in-tree's 4032x3024 side alone
#      (`serve_bench.py --no-ours --concurrency 1 16 --image-size 4032x3024`, ~8 min), then `o5`.
#   Twelfth visit done (round12 README: f3, f4, then the TTFT breakdown and the front end on the host's CPU).
#      With 4 client processes the client adds ~2.5 ms (8.5 with one), and the paced slicer's c=64 steps ran
#      25.5 ms at p50, 37.6 at most. Next (this order): `G3_CONCURRENCY="1 16 64" G3_FLAGS=--no-in-tree G3_CLIENT_PROCS=4
#      G3_SIDES=ours_sliced_paced_t18_api2 ROUND_BUDGET_S=570 ... s1` (ours now with LM graphs to 2048 tokens;
#      the step-time target, 18 ms, 1.45x while 12 requests wait), then `G3_CONCURRENCY="16 64"
#      G3_FLAGS=--no-ours G3_CLIENT_PROCS=4 G3_SIDES="ours_sliced_paced_t20_api2 ours_graphs_512" ... g3`
#      (in-tree last: the same-run comparison; ours_graphs_512 = the old default), then `o6` (offline W1
#      and its TTFT with the new graph default, then the TTFT breakdown). Each step trace now records the
#      tower work launched per step (`tower_work`). Issue 10 still lacks in-tree's 4032x3024 client numbers:
#      on a later lease `p6` (ours, then in-tree) with `PHOTO_FLAGS=--no-ours ... p5` in the next call
#      (in-tree alone: cold start ~2m10, then c=1/16 at ~0.4 req/s).
#   Thirteenth visit done (round13 README: two hosts, the first lease taken back mid-call; s1 with ours and
#      t18 at c=1/16/64, then on another machine s1 with t18 and in-tree at c=16/64). t18: c=16 ITL p99 18.9,
#      c=64 30.7 (engine 27.1) at 1.16x ours' req/s. .gpu parts are now 48 MiB (the tracked tree grew past
#      the carry limit beside 58-MB parts). Next (this order): `G3_CONCURRENCY="16 64" G3_FLAGS=--no-in-tree
#      G3_CLIENT_PROCS=4 G3_SIDES=ours_sliced_paced_t18_s135_api2 ROUND_BUDGET_S=570 ... s1` (ours and x1.35
#      under backlog), then `G3_CONCURRENCY="1 16 64" G3_FLAGS=--no-ours G3_CLIENT_PROCS=4
#      G3_SIDES=ours_sliced_paced_env ... g3` (the paced slicer by its one setting, with its new defaults and
#      one API server: is `--api-server-count 2` needed? in-tree last; its c=1 is issue 10's TTFT), then `o6`.
#      The paced slicer's defaults are now t18's settings (ours_sliced_paced_api2 = t18 since round 13), and
#      fixed-budget sides pin QWENVL_VLLM_STEP_TARGET_MS=0. The client adds ~3.6 ms over the engine at c=64
#      with 4 processes: `python3 benchmarks/client_overhead.py --processes 4 8` (~1 min, no engine) shows
#      whether 8 would measure closer (then G3_CLIENT_PROCS=8).
#   Fourteenth visit done (round14 README: one host, s1 with ours and x1.35, g3 with the paced slicer by its
#      setting and in-tree at c=1/16/64, o6 cut short). x1.35: c=64 ITL p99 32.3 (engine 28.6), TTFT p99 worse
#      than ours; the host was a noisy one, whose steps with tower work are host-bound (+6-10 ms each, the
#      tower term ~0.5x; devcpu README). Next (this order): `G3_CONCURRENCY="16 64" G3_FLAGS=--no-in-tree
#      G3_CLIENT_PROCS=4 G3_SIDES=ours_sliced_paced_api2 ROUND_BUDGET_S=570 ... s1` (ours and the defaults,
#      two API servers), then `G3_CONCURRENCY="16 64" G3_FLAGS="--no-ours --no-in-tree" G3_CLIENT_PROCS=4
#      G3_SIDES=<side> ... g3` where <side> follows s1's host (`step_trace_report.py` on its trace, the fit
#      line): a quiet host (tower term ~1x) gets ours_sliced_paced_t18_s135_api2 (the simulator's c=64 pick
#      there), a host-bound one (~0.5x and +6-10 ms per tower step) ours_sliced_paced_m15_api2 (c=16's tail;
#      `sched_sim.py --cost-trace` predicts nothing reaches c=64's target there), then `o6` (offline W1 ours vs in-tree, compare.py alone now), then `fe` (the front end on the
#      host's CPU: the images' bytes id is now hashed beside decoding, 0.88 ms over decode at 12 MP on the dev
#      CPU; was 3.55 on the host; ~3 min), then `p5` with `PHOTO_FLAGS=--no-ours`.
#   Fifteenth visit (issues 10 and 14 first): `k8` (checkpoints, then the front end), `s72` (72B served, ours
#      vs in-tree), `o6` (offline W1 ours vs in-tree, then the GPU tests).
#   k8 the 2B and 72B GPTQ checkpoints side by side, then fe
#   Fifteenth visit done (round15 README: W1 1.368x in-tree, TTFT 0.342x, front end on the host, 72B served,
#      in-tree 72B cut). Next: `d1` (issue 10's greedy GPU-vs-CPU-pixels check, then offline W3 ours vs
#      in-tree for issue 9), then `fe` (the front end again: the prompt join), then issue 12's s1 / g3 plan
#      above, then `PHOTO_FLAGS=--no-ours ... p5`.
#   d1 the 2B checkpoint, device_pixels_greedy.py, then offline W3 ours vs in-tree (compare.py)
#   fe the front end per image on this host's CPU (frontend_speed.py: ours and in-tree)
#      `benchmarks/step_trace_report.py` prints each trace's fit: check the host class first.
#   s1 a fresh machine's 2B GPTQ checkpoint, then g3's `vllm serve` sides
#   o6 offline W1 ours vs in-tree (compare.py), then the GPU tests with the time left
#   o5 offline W1 ours vs in-tree (compare.py) under the plugin settings of the call's environment
#   l2 the 2B checkpoints beside the GPU tests (slice graphs included), the encode-ahead check of the slicing
#      scheduler (greedy outputs vs vLLM's scheduler, caches and the slicer's queue after aborts)
#   n4 issue 10: the TTFT breakdown, then `vllm serve` with 1920x1080 photos at c=1/16/64, ours vs in-tree
#      (PHOTO_SIDES="ours_sliced_paced": also a serve side of ours; issue 10's c=64 target is 1.3x in-tree)
#   p5 issue 10: `vllm serve` with 4032x3024 photos at c=1/16, ours vs in-tree (after l2 or n4: checkpoints)
#   t  the vision tower benchmark, then the parity run with the fp8 tower (its end-to-end error vs transformers,
#      beside call p's bf16 numbers; expected above the bf16 tolerance) (~8 min)
set -uo pipefail
source "$(dirname "$0")/common.sh"
RET=$OUT; R=/tmp/round; mkdir -p "$R"; OUT=$R
bash .gpu/install.sh 2>&1 | tail -1 || { echo "install failed: a fresh machine? stage .gpu/partNN first"; exit 3; }
pack() { tar czf "$RET/round_$1.tgz" -C "$R" .; }
END=${ROUND_BUDGET_S:-570}  # seconds from the script's start (the install counts): keep it ~30 s under the call's limit
cap() { local left=$((END - SECONDS)); echo $(( left < $1 ? (left > 5 ? left : 5) : $1 )); }  # a step's timeout
gpu_tests() {  # timeout
  timeout "$1" python3 -m pytest -q tests/gpu/test_vision_kernels_gpu.py tests/gpu/test_kernels_gpu.py \
    tests/gpu/test_qwen2_vl_vision_gpu.py tests/gpu/test_writer_gpu.py tests/gpu/test_profile_digest_gpu.py \
    tests/gpu/test_device_pixels_gpu.py \
    >"$R/gpu_tests.log" 2>&1; status gpu_tests $?; tail -2 "$R/gpu_tests.log"
}
encode_ahead_check() {  # timeout
  timeout "$1" python3 scripts/gpu/encode_ahead_check.py --ckpt "$CK/2b-bf16" --kv-cache-gib 8 \
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
    ${G3_PROFILE:+--profile-side $G3_PROFILE --profile-concurrency 64} \
    >"$R/serve_bench.log" 2>&1; status serve_bench $?; tail -8 "$R/serve_bench.log"
}
fresh_2b() { mk 2b-gptq qwen2-vl-2b gptq-int4 --device cpu; echo "== ready at ${SECONDS}s"; }  # 2B GPTQ checkpoint
photos() {  # size concurrencies timeout: `vllm serve` with JPEG photos of that size, ours vs in-tree
  timeout "$3" python3 benchmarks/serve_bench.py --ckpt "$CK/2b-gptq" --concurrency $2 --image-size "$1" \
    ${PHOTO_SIDES:+--extra-sides $PHOTO_SIDES} ${PHOTO_FLAGS:-} --out-dir "$R/serve_photos" >"$R/serve_photos_$1.log" 2>&1
  status "serve_photos_$1" $?
  tail -4 "$R/serve_photos_$1.log"
}
case ${1:?call a, b, c, p, e, h, w, x, s72, t, g1, g2, g3, g4, k1, k2, l1, l2, n3, n4, o5, o6, p5, p6, q6, f3, f4, fe, k8, d1, s1 or ph} in
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
  # engine, ~40 s), the 2B GPTQ checkpoint, then g3's `vllm serve` sides (G3_SIDES, G3_CONCURRENCY, G3_FLAGS)
  timeout 120 python3 benchmarks/client_overhead.py --processes 1 4 >"$R/client_overhead.jsonl" 2>"$R/client_overhead.log"
  status client_overhead $?; cut -c1-400 "$R/client_overhead.jsonl"
  fresh_2b
  serve_sides "$(cap 570)"; pack f3 ;;
s1)
  # a fresh machine: the 2B GPTQ checkpoint, then g3's `vllm serve` sides (G3_SIDES, G3_CONCURRENCY, G3_FLAGS);
  # last, each step trace's fit (is this host's tower step host-bound?)
  fresh_2b
  serve_sides "$(cap 570)"; pack s1
  python3 benchmarks/step_trace_report.py "$R/serve" 2>/dev/null | grep -E "^###|^fit" ;;
o6)
  # offline W1 ours vs in-tree (compare.py: req/s and single-request TTFT; round 14's 340-s cap ended it in
  # in-tree's cold start, so the TTFT breakdown moved to n3/n4)
  timeout "$(cap 500)" python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W1 --tag "${O5_TAG:-_o6}" \
    --out-dir "$R/offline_o6" >"$R/compare_o6.log" 2>&1; status compare_o6 $?; tail -4 "$R/compare_o6.log"; pack o6
  gpu_tests "$(cap 565)"; pack o6 ;;  # with what time is left (the video layout of round 14 is in them)
d1)
  # issue 10's greedy check (GPU pixels vs CPU pixels, 32 media prompts that all need resizing; strict:
  # identical ids and logprobs) on a fresh machine's 2B GPTQ checkpoint, then offline W3 ours vs in-tree
  fresh_2b
  timeout "$(cap 300)" python3 scripts/gpu/device_pixels_greedy.py --ckpt "$CK/2b-gptq" --kv-cache-gib 8 \
    --out "$R/device_pixels_greedy.json" >"$R/device_pixels_greedy.log" 2>&1; status device_pixels_greedy $?
  tail -c 400 "$R/device_pixels_greedy.json"; pack d1
  timeout "$(cap 565)" python3 benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W3 --tag _d1 \
    --out-dir "$R/offline_d1" >"$R/compare_d1.log" 2>&1; status compare_d1 $?; tail -4 "$R/compare_d1.log"; pack d1 ;;
k8)
  # the 2B GPTQ checkpoint on the CPU beside the 72B GPTQ-Int4 one on the GPU (for s72), then fe's front end
  # on the machine's CPUs once the writers are done (nothing else running beside it)
  mk 2b-gptq qwen2-vl-2b gptq-int4 --device cpu & mk_72b "$(cap 400)" & wait; pack k8
  timeout "$(cap 560)" python3 benchmarks/frontend_speed.py --out "$R/frontend_speed.json" >"$R/frontend.log" 2>&1
  status frontend_speed $?; tail -c 400 "$R/frontend_speed.json"; df -h /tmp | tail -1; pack k8 ;;
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
esac
