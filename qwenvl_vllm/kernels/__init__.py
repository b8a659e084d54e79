"""Device-side preprocessing: Pillow-exact bicubic resize, qwen-vl-utils video-frame resize, patchify.

Each function takes uint8 pixels on any device and gives the bytes the CPU reference (Pillow,
torchvision, processors.patchify) gives; CUDA tensors go through Triton kernels where one exists.
"""
