#!/usr/bin/env bash
# GPU checks and benchmarks, one stage per device call (each well under 10 minutes).
# On the GPU machine, after staging .gpu/partNN (see ../shared/gpu/README.md):
#   bash .gpu/install.sh && bash scripts/gpu/run_stage.sh STAGE [STAGE ...]
# Stages: ckpts | smoke | parity | control | quant | int8 | serve | v1 | v1long | v1serve | v1seeds | v1full
#   | v1ntk (tiny, engine-level) | v1ntk_bf16 | v1ntk_int4 (Qwen-VL-Chat shapes; the second also writes the result)
#   | v1ntk_seeds (seed rows on the NTK path)
#   | gputests (all of tests/gpu) | vspeed (vision tower: ours bf16 / fp8 vs in-tree, a benchmark)
# (v1serve before v1full: v1full deletes the bf16 Qwen-VL checkpoint for disk). Benchmarks: gpu_all.sh.
# Results (JSON, logs) go to $OUT (or /tmp/out); checkpoints persist in /tmp/ckpt while the machine lives.
set -uo pipefail
source "$(dirname "$0")/common.sh"

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
      py scripts/gpu/smoke.py --ckpt "$CK/2b-bf16" --out "$OUT/smoke.json" 2>&1 | tail -25; status smoke $? ;;
    parity)
      py scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --out "$OUT/parity_bf16.json" --eager \
        >"$OUT/parity_bf16.log" 2>&1; status parity_bf16 $?; tail -c 1500 "$OUT/parity_bf16.json" ;;
    control)  # transformers parity of ours and, as the bf16 noise floor, of in-tree vLLM
      py scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --out "$OUT/parity_control.json" --eager --skip-in-tree \
        --control-in-tree >"$OUT/parity_control.log" 2>&1; status parity_control $? ;;
    quant)
      for q in gptq awq; do
        py scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --greedy-ckpt "$CK/2b-$q" --out "$OUT/parity_$q.json" \
          --eager --skip-transformers >"$OUT/parity_$q.log" 2>&1; status "parity_$q" $?
      done ;;
    int8)  # GPTQ-Int8 through our class: greedy vs in-tree on the same checkpoint
      mk 2b-bf16 qwen2-vl-2b bf16 & mk 2b-gptq8 qwen2-vl-2b gptq-int8 & wait
      py scripts/gpu/qwen2_vl_parity.py --ckpt "$CK/2b-bf16" --greedy-ckpt "$CK/2b-gptq8" --out "$OUT/parity_gptq8.json" \
        --eager --skip-transformers >"$OUT/parity_gptq8.log" 2>&1; status parity_gptq8 $? ;;
    serve)
      py scripts/gpu/serve_check.py --ckpt "$CK/2b-gptq" --video --out "$OUT/serve.json" --log "$OUT/serve.log" \
        2>&1 | tail -20; status serve $? ;;
    v1)
      py -m pytest -q tests/gpu/test_qwen_vl_gpu.py -m gpu 2>&1 | tail -15; status v1 $?
      py scripts/gpu/serve_check.py --ckpt "$CK/tiny-v1" --grounding --max-model-len 2048 --out "$OUT/serve_v1.json" \
        --log "$OUT/serve_v1.log" 2>&1 | tail -20; status serve_v1 $? ;;
    v1full)  # Qwen-VL-Chat shapes (9.6B): bf16 vs the plain-PyTorch reference, Int4 vs its dequantized twin
      rm -rf "$CK/2b-bf16" "$CK/2b-gptq-deq" "$CK/2b-awq"  # 64 GB disk
      mk qvl-bf16 qwen-vl-chat bf16 & mk qvl-int4 qwen-vl-chat gptq-int4 & wait
      py scripts/gpu/qwen_vl_parity.py --ckpt "$CK/qvl-bf16" --eager --ref-dtype float32 \
        --out "$OUT/qwen_vl_parity_bf16.json" \
        >"$OUT/qwen_vl_parity_bf16.log" 2>&1; status qwen_vl_bf16 $?
      rm -rf "$CK/qvl-bf16"; mk qvl-int4-deq qwen-vl-chat gptq-int4 --dequantized
      py scripts/gpu/qwen_vl_parity.py --ckpt "$CK/qvl-int4" --ref-ckpt "$CK/qvl-int4-deq" --eager \
        --out "$OUT/qwen_vl_parity_int4.json" >"$OUT/qwen_vl_parity_int4.log" 2>&1; status qwen_vl_int4 $? ;;
    v1serve)  # full-size Qwen-VL-Chat and -Int4 through unchanged `vllm serve`, OpenAI chat + grounding
      mk qvl-int4 qwen-vl-chat gptq-int4 & mk qvl-bf16 qwen-vl-chat bf16 & wait
      for c in int4 bf16; do
        py scripts/gpu/serve_check.py --ckpt "$CK/qvl-$c" --grounding --max-model-len 2048 \
          --out "$OUT/serve_qwen_vl_$c.json" --log "$OUT/serve_qwen_vl_$c.log" 2>&1 | tail -3
      done ;;
    v1seeds)  # the Qwen-VL-Chat card's BF16 row (the Int4 row is in benchmarks/gpu_all.sh)
      mk qvl-bf16 qwen-vl-chat bf16
      py benchmarks/seed_tables.py --ckpt "$CK/qvl-bf16" --label qwen-vl-chat-bf16 \
        --out "$OUT/seed_qwen_vl_bf16.json" 2>&1 | tail -3 ;;
    v1long)  # tiny Qwen-VL decoding past seq_length (logn attention) vs the reference
      py -m pytest -q tests/gpu/test_qwen_vl_gpu.py -m gpu -k past_seq_length 2>&1 | tail -15; status v1long $? ;;
    v1ntk)  # tiny Qwen-VL, prompts past seq_length in mixed batches through vllm.LLM (dynamic NTK per request)
      py -m pytest -q tests/gpu/test_qwen_vl_ntk_gpu.py -m gpu 2>&1 | tail -15; status v1ntk $? ;;
    v1ntk_bf16)  # Qwen-VL-Chat shapes, ~1.5k/2.5k/5k/9k-token prompts + mixed batch, bf16 vs float32 reference
      rm -rf "$CK/2b-bf16" "$CK/2b-gptq-deq" "$CK/2b-awq" "$CK/qvl-int4-deq"  # 64 GB disk
      mk qvl-bf16 qwen-vl-chat bf16
      py scripts/gpu/qwen_vl_long_context.py --ckpt "$CK/qvl-bf16" --ref-dtype float32 --label bf16 \
        --out "$OUT/long_context_bf16.json" >"$OUT/long_context_bf16.log" 2>&1; status long_context_bf16 $?
      tail -c 600 "$OUT/long_context_bf16.json" ;;
    v1ntk_int4)  # the same for Int4 vs its dequantized twin; then the committed result file
      rm -rf "$CK/qvl-bf16"; mk qvl-int4 qwen-vl-chat gptq-int4 & mk qvl-int4-deq qwen-vl-chat gptq-int4 --dequantized & wait
      py scripts/gpu/qwen_vl_long_context.py --ckpt "$CK/qvl-int4" --ref-ckpt "$CK/qvl-int4-deq" --label int4 \
        --out "$OUT/long_context_int4.json" >"$OUT/long_context_int4.log" 2>&1; status long_context_int4 $?
      py scripts/gpu/qwen_vl_long_context.py --combine "$OUT/long_context_bf16.json" "$OUT/long_context_int4.json" \
        --out "$OUT/qwen_vl_chat_long_context.json" | tail -5; status long_context $? ;;
    v1ntk_seeds)  # throughput cost: the Qwen-VL-Chat-Int4 seed rows (max_model_len 8192: NTK path on,
      # prefix caching off) vs before this change (README: 249 / 227 tok/s); the bf16 rows: stage v1seeds
      mk qvl-int4 qwen-vl-chat gptq-int4
      py benchmarks/seed_tables.py --ckpt "$CK/qvl-int4" --label qwen-vl-chat-int4 \
        --out "$OUT/seed_qwen_vl_int4_ntk.json" 2>&1 | tail -3 ;;
    gputests)
      py -m pytest -q tests/gpu -m gpu 2>&1 | tail -15; status gputests $? ;;
    vspeed)
      py benchmarks/vision_tower.py --out-dir "$OUT" 2>&1 | tail -12; status vspeed $? ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  echo "-- $stage took $(( $(date +%s) - start )) s"
done
