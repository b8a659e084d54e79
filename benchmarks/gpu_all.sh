#!/usr/bin/env bash
# The whole ours-vs-in-tree comparison on the GPU machine in one visit, resumable across device calls.
# After staging .gpu/partNN (../shared/gpu/README.md), repeat this same command until it prints ALL DONE:
#   bash benchmarks/gpu_all.sh
# Each call installs (idempotent), then runs the stages not yet done while they fit in BUDGET seconds
# (default 540, under the 10-minute command limit). State and results live in /tmp/bench while the
# machine is held; every call leaves results.tgz (all results so far) in $OUT.
# SHAPES=7b runs the offline comparison (W1-W4, in two halves) on Qwen2-VL-7B shapes (STAGES: others).
set -uo pipefail
T0=$(date +%s); BUDGET=${BUDGET:-540}; SHAPES=${SHAPES:-2b}
if [ "$SHAPES" = 2b ]; then STAGES=${STAGES:-ckpts offline serve seeds summary}; else STAGES=${STAGES:-ckpts offline12 offline34 summary}; fi
ROOT=/tmp/bench-$SHAPES; RES=$ROOT/results; DONE=$ROOT/done; mkdir -p "$RES" "$DONE"
RET=${OUT:-/tmp/out}; mkdir -p "$RET"
OUT=$RES
source "$(dirname "$0")/../scripts/gpu/common.sh"
bash .gpu/install.sh 2>&1 | tail -1 || { echo "install failed: a fresh machine? stage .gpu/partNN first"; exit 3; }

pack() { tar czf "$RET/results.tgz" -C "$ROOT" results done; }

stage_ckpts() {
  if [ "$SHAPES" != 2b ]; then mk "$SHAPES-gptq" "qwen2-vl-$SHAPES" gptq-int4; ls "$CK/$SHAPES-gptq/config.json"; return; fi
  mk 2b-gptq qwen2-vl-2b gptq-int4 & mk 2b-bf16 qwen2-vl-2b bf16 & mk qvl-int4 qwen-vl-chat gptq-int4 & wait
  ls "$CK"/{2b-gptq,2b-bf16,qvl-int4}/config.json >/dev/null
}
stage_offline() {  # W1-W4, one engine per side, latency medians, weights / KV / peak memory
  py benchmarks/compare.py --ckpt "$CK/$SHAPES-gptq" --workloads W1 W2 W3 W4 --out-dir "$RES" 2>&1 | tail -8
}
stage_offline12() { py benchmarks/compare.py --ckpt "$CK/$SHAPES-gptq" --workloads W1 W2 --out-dir "$RES" 2>&1 | tail -6; }
stage_offline34() { py benchmarks/compare.py --ckpt "$CK/$SHAPES-gptq" --workloads W3 W4 --out-dir "$RES" 2>&1 | tail -6; }
stage_serve() {
  py benchmarks/serve_bench.py --ckpt "$CK/$SHAPES-gptq" --concurrency 1 16 64 --out-dir "$RES" 2>&1 | tail -8
}
stage_seeds() {
  local rc=0
  for spec in 2b-gptq:qwen2-vl-2b-gptq-int4 2b-bf16:qwen2-vl-2b-bf16 qvl-int4:qwen-vl-chat-int4; do
    py benchmarks/seed_tables.py --ckpt "$CK/${spec%%:*}" --label "${spec#*:}" \
      --out "$RES/seed_${spec#*:}.json" 2>&1 | tail -2 || rc=1
  done
  return $rc
}
stage_summary() {
  py benchmarks/summarize.py "$RES" >"$RES/SUMMARY.md" && cat "$RES/SUMMARY.md"
}

run() {  # name seconds-estimate: run stage_<name> once, if it fits in what is left of this call
  local name=$1 est=$2 s rc
  [ -f "$DONE/$name" ] && return 0
  if [ $(( $(date +%s) - T0 + est )) -gt "$BUDGET" ]; then
    echo "-- $name (~${est} s) does not fit in this call: run the same command again"; pack; exit 0
  fi
  s=$(date +%s); "stage_$name"; rc=$?
  echo "$rc" >"$DONE/$name"; echo "-- $name: exit $rc in $(( $(date +%s) - s )) s"; pack
}

declare -A ESTIMATE=([ckpts]=240 [offline]=420 [offline12]=330 [offline34]=300 [serve]=300 [seeds]=360 [summary]=10)
for stage in $STAGES; do run "$stage" "${ESTIMATE[$stage]}"; done
grep -L '^0$' "$DONE"/* | sed 's/^/FAILED: /'
echo "ALL DONE"
