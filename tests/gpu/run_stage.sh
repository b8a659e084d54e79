#!/usr/bin/env bash
# GPU checks and benchmarks, one stage per device call (each well under 10 minutes).
# On the GPU machine, after staging .gpu/partNN (see ../shared/gpu/README.md):
#   bash .gpu/install.sh && bash tests/gpu/run_stage.sh STAGE [STAGE ...]
# Stages: ckpts | smoke | parity | control | quant | w1 | workloads | servebench | seeds | serve | v1 | v1full
#         | v1serve
# Results (JSON, logs) go to $OUT (or /tmp/out); checkpoints persist in /tmp/ckpt while the machine lives.
set -uo pipefail
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 VLLM_WORKER_MULTIPROC_METHOD=spawn PATH=/tmp/site/bin:$PATH
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
OUT=${OUT:-/tmp/out}; CK=/tmp/ckpt; mkdir -p "$OUT" "$CK"
py() { python3 "$@"; }
mk() {  # name model quant [extra args]
  local name=$1 model=$2 quant=$3; shift 3
  [ -f "$CK/$name/config.json" ] || py -m qwenvl_vllm.cli make-checkpoint --model "$model" --quant "$quant" \
    --out "$CK/$name" "$@" >"$OUT/mk_$name.log" 2>&1 || { echo "checkpoint $name failed"; tail -5 "$OUT/mk_$name.log"; }
}
status() { echo "== $1: exit $2"; }

for stage in "$@"; do
  start=$(date +%s)
  case $stage in
    ckpts)
      mk 2b-bf16 qwen2-vl-2b bf16 & mk 2b-gptq qwen2-vl-2b gptq-int4 & wait
      if [ -z "${QUICK:-}" ]; then
        mk 2b-awq qwen2-vl-2b awq & mk 2b-gptq-deq qwen2-vl-2b gptq-int4 --dequantized & mk tiny-v1 tiny-qwen-vl bf16 & wait
      fi
      du -sh "$CK"/* ;;
    smoke)
      py tests/gpu/smoke.py --ckpt "$CK/2b-bf16" --out "$OUT/smoke.json" 2>&1 | tail -25; status smoke $? ;;
    parity)
      py tests/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --out "$OUT/parity_bf16.json" --eager \
        >"$OUT/parity_bf16.log" 2>&1; status parity_bf16 $?; tail -c 1500 "$OUT/parity_bf16.json" ;;
    control)  # transformers parity of ours and, as the bf16 noise floor, of in-tree vLLM
      py tests/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --out "$OUT/parity_control.json" --eager --skip-in-tree \
        --control-in-tree >"$OUT/parity_control.log" 2>&1; status parity_control $? ;;
    servebench)
      py benchmarks/serve_bench.py --ckpt "$CK/2b-gptq" --concurrency 1 16 64 --out-dir "$OUT" 2>&1 | tail -8 ;;
    seeds)
      for q in gptq bf16; do
        py benchmarks/seed_tables.py --ckpt "$CK/2b-$q" --label "$q" --out "$OUT/seed_$q.json" 2>&1 | tail -3
      done ;;
    quant)
      for q in gptq awq; do
        py tests/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --greedy-ckpt "$CK/2b-$q" --out "$OUT/parity_$q.json" \
          --eager --skip-transformers >"$OUT/parity_$q.log" 2>&1; status "parity_$q" $?
      done ;;
    w1)
      py benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads W1 --out-dir "$OUT" 2>&1 | tail -8 ;;
    workloads)
      py benchmarks/compare.py --ckpt "$CK/2b-gptq" --workloads ${WORKLOADS:-W2 W3 W4} --out-dir "$OUT" 2>&1 | tail -8 ;;
    serve)
      py tests/gpu/serve_check.py --ckpt "$CK/2b-gptq" --video --out "$OUT/serve.json" --log "$OUT/serve.log" \
        2>&1 | tail -20; status serve $? ;;
    v1)
      py -m pytest -q tests/gpu/test_qwen_vl_gpu.py -m gpu 2>&1 | tail -15; status v1 $?
      py tests/gpu/serve_check.py --ckpt "$CK/tiny-v1" --grounding --max-model-len 2048 --out "$OUT/serve_v1.json" \
        --log "$OUT/serve_v1.log" 2>&1 | tail -20; status serve_v1 $? ;;
    v1full)  # Qwen-VL-Chat shapes (9.6B): bf16 vs the plain-PyTorch reference, Int4 vs its dequantized twin
      rm -rf "$CK/2b-bf16" "$CK/2b-gptq-deq" "$CK/2b-awq"  # 64 GB disk
      mk qvl-bf16 qwen-vl-chat bf16 & mk qvl-int4 qwen-vl-chat gptq-int4 & wait
      py tests/gpu/qwen_vl_parity.py --ckpt "$CK/qvl-bf16" --eager --ref-dtype float32 \
        --out "$OUT/qwen_vl_parity_bf16.json" \
        >"$OUT/qwen_vl_parity_bf16.log" 2>&1; status qwen_vl_bf16 $?
      rm -rf "$CK/qvl-bf16"; mk qvl-int4-deq qwen-vl-chat gptq-int4 --dequantized
      py tests/gpu/qwen_vl_parity.py --ckpt "$CK/qvl-int4" --ref-ckpt "$CK/qvl-int4-deq" --eager \
        --out "$OUT/qwen_vl_parity_int4.json" >"$OUT/qwen_vl_parity_int4.log" 2>&1; status qwen_vl_int4 $? ;;
    v1serve)  # full-size Qwen-VL-Chat and -Int4 through unchanged `vllm serve`, then the card's speed row
      mk qvl-int4 qwen-vl-chat gptq-int4 & mk qvl-bf16 qwen-vl-chat bf16 & wait
      for c in int4 bf16; do
        py tests/gpu/serve_check.py --ckpt "$CK/qvl-$c" --grounding --max-model-len 2048 \
          --out "$OUT/serve_qwen_vl_$c.json" --log "$OUT/serve_qwen_vl_$c.log" 2>&1 | tail -3
        py benchmarks/seed_tables.py --ckpt "$CK/qvl-$c" --label "qwen-vl-chat-$c" --out "$OUT/seed_qwen_vl_$c.json" \
          2>&1 | tail -3
      done ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  echo "-- $stage took $(( $(date +%s) - start )) s"
done
