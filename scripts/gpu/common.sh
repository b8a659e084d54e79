# Shared by scripts/gpu/run_stage.sh and benchmarks/gpu_all.sh (sourced, not run). After .gpu/install.sh:
# the project and its wheels live in /tmp/site; checkpoints persist in /tmp/ckpt while the machine lives.
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 VLLM_WORKER_MULTIPROC_METHOD=spawn PATH=/tmp/site/bin:$PATH
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
OUT=${OUT:-/tmp/out}; CK=/tmp/ckpt; mkdir -p "$OUT" "$CK"
py() { python3 "$@"; }
mk() {  # name model quant [extra args]: write a checkpoint with our writer unless it exists
  local name=$1 model=$2 quant=$3; shift 3
  [ -f "$CK/$name/config.json" ] || py -m qwenvl_vllm.cli make-checkpoint --model "$model" --quant "$quant" \
    --out "$CK/$name" "$@" >"$OUT/mk_$name.log" 2>&1 || { echo "checkpoint $name failed"; tail -5 "$OUT/mk_$name.log"; }
}
status() { echo "== $1: exit $2"; }
