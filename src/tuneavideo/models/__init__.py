"""The inflated video UNet and its attention layers."""

from .attention import SparseCausalAttnProcessor, VideoTransformerBlock
from .unet import FrameGroupNorm, TuneAVideoUNet, WeightLoadError, pool_norms_over_frames

__all__ = ["FrameGroupNorm", "SparseCausalAttnProcessor", "TuneAVideoUNet", "VideoTransformerBlock", "WeightLoadError", "pool_norms_over_frames"]
