"""Our kernels, each with a torch / CPU definition that the GPU path is tested against.

- Device-side preprocessing: Pillow-exact bicubic resize, qwen-vl-utils video-frame resize, patchify.
  Each function takes uint8 pixels on any device and gives the bytes the CPU reference (Pillow,
  torchvision, processors.patchify) gives; CUDA tensors go through Triton kernels where one exists.
- Vision tower: residual add fused into LayerNorm, QuickGELU, and the fp8 (e4m3) rows / GEMMs of the
  optional fp8 tower (`layernorm`, `quick_gelu`, `fp8`).
"""
