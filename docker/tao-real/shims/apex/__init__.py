"""Stub of NVIDIA apex for deft's real-TAO test image (docker/tao-real) only: apex is built against CUDA
and is not on PyPI. NVIDIA's Data Services 7.3.0 `embedding` imports it at module level through
nvidia_tao_pytorch/multimodal/clip/utils/utils.py (`from apex.optimizers import FusedLAMB`), used only when
CLIP is *trained*; image embeddings with SigLIP never call it."""
