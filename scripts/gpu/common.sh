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
# Kernel and compile caches: the first engine on a fresh machine spends 85-140 s compiling what later ones
# find here (round 17). A call saves them (`save_caches`, into the call's results); the next visit copies that
# file to .gpu/caches.tgz and carries it with the last part, and `restore_caches` unpacks it after install.
CACHE_DIRS=("${HOME:-/root}/.triton" "${HOME:-/root}/.cache/vllm" "${HOME:-/root}/.cache/flashinfer" "/tmp/torchinductor_$(whoami)")
save_caches() {  # dest.tgz [seconds]: the caches that exist, if they pack into 15 MiB (a returned file's limit is 16)
  local have=() d size part=/tmp/caches.tgz.part limit=${2:-90}
  [ "$limit" -ge 20 ] || { echo "caches: ${limit} s left, not saved"; return; }
  for d in "${CACHE_DIRS[@]}"; do [ -d "$d" ] && have+=("$d"); done
  [ ${#have[@]} -gt 0 ] || { echo "no caches"; return; }
  du -sh "${have[@]}"
  rm -f "$part"
  timeout "$limit" tar czf "$part" -P "${have[@]}" 2>/dev/null || { rm -f "$part"; echo "caches: tar failed or timed out"; return; }
  size=$(stat -c %s "$part")
  if [ "$size" -le $((15 * 1024 * 1024)) ]; then mv "$part" "$1"; echo "caches: $size bytes in $1"
  else rm -f "$part"; echo "caches: $size bytes, over 15 MiB: dropped"; fi
}
restore_caches() { [ -f .gpu/caches.tgz ] && tar xzf .gpu/caches.tgz -P && echo "caches restored"; true; }
