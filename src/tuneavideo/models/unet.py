"""The inflated video UNet of Tune-A-Video, built on diffusers' ``UNet2DConditionModel``.

Public layout: latents are ``(b, c, f, h, w)``. Inside, every 2-D layer sees ``((b f), c, h, w)``:
convolutions, up/down-sampling and the transformers' input GroupNorm run per frame, which is the
reference's 1x3x3 "pseudo-3D" convolution. What is not per frame:

- ResNet GroupNorms (``norm1``, ``norm2``) and ``conv_norm_out`` pool statistics over all frames of
  a video (:class:`FrameGroupNorm`), as the reference's GroupNorm on 5-D tensors does;
- attn1 is sparse-causal and each transformer block ends with a temporal attention
  (:class:`~tuneavideo.models.attention.VideoTransformerBlock`).

Parameter names are those of ``UNet2DConditionModel`` plus ``attn_temp.*`` and ``norm_temp.*``, the
reference's names, so Stable Diffusion weights and the reference's ``unet/`` checkpoints load
strictly.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import nn

from ..errors import TuneAVideoError
from .attention import PerFrameAttnProcessor, SparseCausalAttnProcessor, VideoTransformerBlock, init_temporal

if TYPE_CHECKING:
    from ..windows import WindowAnchors

SUPPORTED_BLOCKS = {"CrossAttnDownBlock2D", "DownBlock2D", "UNetMidBlock2DCrossAttn", "UpBlock2D", "CrossAttnUpBlock2D"}
# Block names in the reference's config.json (diffusers 0.11 era) and their 2-D counterparts.
REFERENCE_BLOCKS = {
    "CrossAttnDownBlock3D": "CrossAttnDownBlock2D",
    "DownBlock3D": "DownBlock2D",
    "UNetMidBlock3DCrossAttn": "UNetMidBlock2DCrossAttn",
    "UpBlock3D": "UpBlock2D",
    "CrossAttnUpBlock3D": "CrossAttnUpBlock2D",
}
TEMPORAL_KEYS = ("attn_temp.", "norm_temp.")


class WeightLoadError(TuneAVideoError):
    """Weights that do not fit the model: names the missing and unexpected keys."""


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics span all frames of a video: per group over ``(c/G, f, h, w)``.

    Input ``((b f), c, h, w)``; ``num_frames`` is set by :meth:`TuneAVideoUNet.forward` before
    each call. Same parameters as ``nn.GroupNorm``, so image weights load unchanged.
    """

    num_frames: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.num_frames
        if frames == 1:
            return super().forward(x)
        batch_frames, channels, height, width = x.shape
        video = x.view(batch_frames // frames, frames, channels, height * width).transpose(1, 2)  # (b, c, f, h*w)
        video = F.group_norm(video, self.num_groups, self.weight, self.bias, self.eps)
        return video.transpose(1, 2).reshape(batch_frames, channels, height, width)


def _as_frame_norm(norm: nn.GroupNorm) -> FrameGroupNorm:
    frame_norm = FrameGroupNorm.__new__(FrameGroupNorm)
    frame_norm.__dict__.update(norm.__dict__)  # same parameters, same hyper-parameters
    return frame_norm


def pool_norms_over_frames(unet: nn.Module) -> list[FrameGroupNorm]:
    """Make the GroupNorms that Tune-A-Video pools over frames (the ResNets' ``norm1`` and ``norm2`` and
    ``conv_norm_out``) :class:`FrameGroupNorm` in place, and return them. The weights and their names stay the
    same; each returned norm pools over ``num_frames`` consecutive samples of its input (1 at first: per sample)."""
    pooled = []
    for name, module in list(unet.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in ("norm1", "norm2") and type(child) is nn.GroupNorm and "resnets" in name:
                setattr(module, child_name, _as_frame_norm(child))
                pooled.append(getattr(module, child_name))
    if type(unet.conv_norm_out) is nn.GroupNorm:
        unet.conv_norm_out = _as_frame_norm(unet.conv_norm_out)
        pooled.append(unet.conv_norm_out)
    return pooled


class TuneAVideoUNet(UNet2DConditionModel):
    """Stable Diffusion's UNet inflated to video (Tune-A-Video section 3.2).

    Build it from an image UNet with :meth:`from_unet2d`, from its own folder with
    ``from_pretrained``, or from a reference ``unet/`` folder (``_class_name: UNet3DConditionModel``)
    with ``from_pretrained`` too. Takes and returns latents ``(b, c, f, h, w)``.
    """

    #: False makes the ResNet GroupNorms per frame again: with per-frame attention and an untuned
    #: ``attn_temp`` the model is then the image model applied frame by frame (an ablation baseline).
    pool_norm_over_frames: bool = True

    @functools.wraps(UNet2DConditionModel.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        blocks = set(self.config.down_block_types) | set(self.config.up_block_types) | {self.config.mid_block_type}
        if not blocks <= SUPPORTED_BLOCKS:
            raise ValueError(f"cannot inflate UNet blocks {sorted(blocks - SUPPORTED_BLOCKS)}: only Stable Diffusion 1.x/2.x UNets")
        self._inflate()

    def _inflate(self) -> None:
        for module in list(self.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, BasicTransformerBlock):
                    setattr(module, child_name, VideoTransformerBlock(child))
        pool_norms_over_frames(self)

    def set_frame_attention(self, mode: str) -> None:
        """``"sparse-causal"`` (the method) or ``"per-frame"`` (each frame attends to itself only, as
        the image model does: the paper's ablation of ST-Attn)."""
        if mode not in ("sparse-causal", "per-frame"):
            raise ValueError(f"frame attention {mode!r} is unknown; use sparse-causal or per-frame")
        for block in self.modules():
            if isinstance(block, VideoTransformerBlock):
                block.attn1.set_processor(SparseCausalAttnProcessor() if mode == "sparse-causal" else PerFrameAttnProcessor())

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_unet2d(cls, unet: UNet2DConditionModel, seed: int | None = None) -> TuneAVideoUNet:
        """Inflate an image UNet. Its weights are taken over (shared, not copied); the temporal
        layers are new (``to_out`` zero, so the result equals the image model on identical frames).
        Their random initial weights come from a CPU generator seeded with ``seed``, or from torch's
        global generator when ``seed`` is ``None``.
        """
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
        with torch.device("meta"):
            video = cls.from_config(config)
        state = unet.state_dict()
        missing, unexpected = video.load_state_dict(state, strict=False, assign=True)
        new = [k for k in missing if _is_temporal(k)]
        _check_keys([k for k in missing if not _is_temporal(k)], unexpected, what="the image UNet")
        param = next(unet.parameters())
        # a seeded initialisation draws on the CPU, so that it gives the same weights on every device
        init_device = torch.device("cpu") if generator is not None else param.device
        for block in video.modules():
            if isinstance(block, VideoTransformerBlock):
                temporal = (block.attn_temp, block.norm_temp)
                for module in temporal:
                    module.to_empty(device=init_device)
                init_temporal(block, generator)
                for module in temporal:
                    module.to(param.device, param.dtype)
        assert not any(p.is_meta for p in video.parameters()), new
        return video.train(unet.training)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> TuneAVideoUNet:
        """Load our own saved folder, or a Tune-A-Video reference ``unet/`` folder."""
        folder = Path(pretrained_model_name_or_path)
        if kwargs.get("subfolder"):
            folder = folder / kwargs["subfolder"]
        config_file = folder / "config.json"
        if config_file.is_file() and json.loads(config_file.read_text()).get("_class_name") == "UNet3DConditionModel":
            return cls.from_reference(folder, torch_dtype=kwargs.get("torch_dtype"))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_reference(cls, folder: str | Path, torch_dtype: torch.dtype | None = None) -> TuneAVideoUNet:
        """Load a ``unet/`` folder saved by the reference's training script (diffusers 0.11 format:
        ``config.json`` with 3-D block names and ``diffusion_pytorch_model.bin``), strictly."""
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        for key in ("down_block_types", "up_block_types"):
            config[key] = [REFERENCE_BLOCKS.get(b, b) for b in config[key]]
        config["mid_block_type"] = REFERENCE_BLOCKS.get(config.get("mid_block_type", "UNetMidBlock3DCrossAttn"))
        with torch.device("meta"):
            model = cls.from_config(config)
        weights = folder / "diffusion_pytorch_model.safetensors"
        if weights.is_file():
            from safetensors.torch import load_file

            state = load_file(weights)
        elif (folder / "diffusion_pytorch_model.bin").is_file():
            state = torch.load(folder / "diffusion_pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise WeightLoadError(f"{folder} has no diffusion_pytorch_model.bin or .safetensors; point at the reference's unet/ folder")
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        _check_keys(missing, unexpected, what=str(folder))
        if torch_dtype is not None:
            model.to(torch_dtype)
        return model.eval()

    # -- forward ----------------------------------------------------------------------------------

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        return_dict: bool = True,
        frame_window: WindowAnchors | None = None,
    ) -> UNet2DConditionOutput | tuple[torch.Tensor]:
        """Predict noise for video latents.

        Args:
            sample: ``(b, c, f, h, w)`` noisy latents.
            timestep: a scalar, or ``(b,)``: one timestep for all frames of a video.
            encoder_hidden_states: ``(b, l, d)`` text embeddings, shared by all frames.
            frame_window: the ``f`` frames are one window of a longer video
                (:class:`~tuneavideo.windows.WindowedUNet` passes it): sparse-causal attention takes frame 0 and
                the frame before the window from it; temporal attention and pooled norms see the window's frames.
        Returns:
            ``(b, c_out, f, h, w)``, in a ``UNet2DConditionOutput`` unless ``return_dict=False``.
        """
        batch, channels, frames, height, width = sample.shape
        for module in self.modules():
            if isinstance(module, FrameGroupNorm):
                module.num_frames = frames if self.pool_norm_over_frames else 1
        x = sample.transpose(1, 2).reshape(batch * frames, channels, height, width)  # ((b f), c, h, w)
        if torch.is_tensor(timestep) and timestep.ndim == 1 and timestep.shape[0] == batch:
            timestep = timestep.repeat_interleave(frames)
        context = encoder_hidden_states.repeat_interleave(frames, dim=0)  # ((b f), l, d)
        out = super().forward(x, timestep, context, cross_attention_kwargs={"num_frames": frames, "frame_window": frame_window},
                            return_dict=False)[0]
        out = out.view(batch, frames, -1, height, width).transpose(1, 2)  # (b, c_out, f, h, w)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


def _is_temporal(key: str) -> bool:
    return any(part in key for part in TEMPORAL_KEYS)


def _check_keys(missing: list[str], unexpected: list[str], what: str) -> None:
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "") if keys else "none"

        raise WeightLoadError(
            f"weights of {what} do not fit this UNet: missing {show(missing)}; unexpected {show(unexpected)}. "
            "Use a Stable Diffusion 1.x/2.x UNet whose config matches the weights"
        )
