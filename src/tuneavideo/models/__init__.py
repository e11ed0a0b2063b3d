"""The inflated video UNet and its attention layers."""

from .attention import SparseCausalAttnProcessor, VideoTransformerBlock
from .unet import FrameGroupNorm, TuneAVideoUNet, WeightLoadError

__all__ = ["FrameGroupNorm", "SparseCausalAttnProcessor", "TuneAVideoUNet", "VideoTransformerBlock", "WeightLoadError"]
