#!/usr/bin/env bash
# Issue 14 on the 2-GPU kind (nvidia-h200-x2), after staging as for vision_round.sh; calls back to back
# (checkpoints in /tmp/ckpt); results in $OUT/tp2_<call>.tgz.
#   m  checkpoints: Qwen2-VL-7B bf16, Qwen2-VL-72B GPTQ-Int4 (intermediate size padded as released),
#      Qwen-VL-Chat bf16 and Int4, quantized on the GPU (~8 min)
#   p  TP=2 parity, Qwen2-VL-7B bf16: ours TP=2 (both ViT modes) vs ours TP=1 and in-tree TP=2 (~9 min)
#   q  the same for Qwen2-VL-72B GPTQ-Int4 (TP=1 fits one H200 at Int4) (~10 min)
#   v  TP=2 parity for Qwen-VL-Chat bf16 and Int4 (ours only) (~8 min)
#   t  throughput at TP=2, 7B: W1 ours vs in-tree, each ViT mode (~10 min)
#   u  the same for 72B Int4 (~10 min)
#   s  `vllm serve -tp 2` c=64, ours vs in-tree: 7B, then 72B Int4 (~9 min)
set -uo pipefail
source "$(dirname "$0")/common.sh"
RET=$OUT; R=/tmp/tp2; mkdir -p "$R"; OUT=$R
bash .gpu/install.sh 2>&1 | tail -1 || { echo "install failed: a fresh machine? stage .gpu/partNN first"; exit 3; }
pack() { tar czf "$RET/tp2_$1.tgz" -C "$R" .; }
parity() {  # name family ckpt
  timeout 580 python3 scripts/gpu/tp_parity.py --family "$2" --ckpt "$3" --out "$R/$1_tp2_parity.json" \
    >"$R/$1_tp2_parity.log" 2>&1; status "parity_$1" $?; tail -c 500 "$R/$1_tp2_parity.json"
}
throughput() {  # name ckpt
  for mode in weights data; do
    timeout 280 python3 benchmarks/compare.py --ckpt "$2" --workloads W1 --num-requests 128 --tensor-parallel-size 2 \
      --mm-encoder-tp-mode "$mode" --tag "_$1_tp2_$mode" --out-dir "$R/offline" >"$R/compare_$1_$mode.log" 2>&1
    status "w1_$1_$mode" $?; tail -3 "$R/compare_$1_$mode.log"
  done
}
case ${1:?call m, p, q, v, t, u or s} in
m)
  mk 7b-bf16 qwen2-vl-7b bf16 & mk qvl-bf16 qwen-vl-chat bf16 & mk qvl-int4 qwen-vl-chat gptq-int4 & wait
  mk 72b-gptq qwen2-vl-72b gptq-int4; du -sh "$CK"/*; pack m ;;
p) parity qwen2_vl_7b qwen2-vl "$CK/7b-bf16"; pack p ;;
q) parity qwen2_vl_72b_int4 qwen2-vl "$CK/72b-gptq"; pack q ;;
v) parity qwen_vl_chat qwen-vl "$CK/qvl-bf16"; parity qwen_vl_chat_int4 qwen-vl "$CK/qvl-int4"; pack v ;;
t) throughput 7b "$CK/7b-bf16"; pack t ;;
u) throughput 72b "$CK/72b-gptq"; pack u ;;
s)
  for name in 7b-bf16 72b-gptq; do
    timeout 270 python3 benchmarks/serve_bench.py --ckpt "$CK/$name" --concurrency 64 --serve-args "-tp 2" \
      --out-dir "$R/serve_$name" >"$R/serve_$name.log" 2>&1; status "serve_$name" $?; tail -3 "$R/serve_$name.log"
  done
  pack s ;;
esac
