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
# Kernel and compile caches: the first engine on a fresh machine spends 70-140 s after its graph capture
# that later engines skip (round 18: ours first 77 s, in-tree second 6 s); FlashInfer's nvcc-built modules
# are the likely bulk. A call saves them (`save_caches`, into the call's results); the next visit copies that
# file to .gpu/caches.tgz and carries it with the last part, and `restore_caches` unpacks it after install.
# Kernels first: vLLM's cache dir (93 MB in round 18; all caches packed to 16.2 MB) is kept only if all fits.
HOME_DIR=${HOME:-/root}
KERNEL_CACHE_DIRS=("$HOME_DIR/.cache/flashinfer" "$HOME_DIR/.triton" "$HOME_DIR/.cache/vllm/flashinfer_autotune_cache")
COMPILE_CACHE_DIRS=("$HOME_DIR/.cache/vllm" "/tmp/torchinductor_$(whoami)")
pack_caches() {  # part.tgz seconds dir...: pack the dirs that exist; true if the result fits 15 MiB
  local part=$1 limit=$2 have=() d; shift 2
  for d in "$@"; do [ -d "$d" ] && have+=("$d"); done
  [ ${#have[@]} -gt 0 ] || return 1
  du -sh "${have[@]}"; rm -f "$part"
  timeout "$limit" tar czf "$part" -P "${have[@]}" 2>/dev/null || { rm -f "$part"; return 1; }
  echo "caches: $(stat -c %s "$part") bytes"; [ "$(stat -c %s "$part")" -le $((15 * 1024 * 1024)) ]
}
save_caches() {  # dest.tgz [seconds]: all caches if they pack into 15 MiB (a returned file's limit is 16), else the kernels'
  local part=/tmp/caches.tgz.part limit=${2:-90}
  [ "$limit" -ge 20 ] || { echo "caches: ${limit} s left, not saved"; return; }
  if pack_caches "$part" $((limit / 2)) "${KERNEL_CACHE_DIRS[@]}" "${COMPILE_CACHE_DIRS[@]}" \
    || pack_caches "$part" $((limit / 2)) "${KERNEL_CACHE_DIRS[@]}"; then mv "$part" "$1"; echo "caches in $1"
  else rm -f "$part"; echo "caches: none saved"; fi
}
restore_caches() { [ -f .gpu/caches.tgz ] && tar xzf .gpu/caches.tgz -P && echo "caches restored"; true; }
