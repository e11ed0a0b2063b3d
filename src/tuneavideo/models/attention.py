"""Attention for the inflated UNet: sparse-causal self-attention and the video transformer block.

Layout inside the UNet: spatial tensors are ``((b f), n, c)`` with ``n = h * w`` tokens per frame,
frames of one video adjacent in the batch axis. Temporal attention works on ``((b n), f, c)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

if TYPE_CHECKING:
    from ..windows import WindowAnchors


class SparseCausalAttnProcessor:
    """Sparse-causal self-attention (ST-Attn, Tune-A-Video eq. 2) as a diffusers attention processor.

    The query of frame ``i`` attends to the keys and values of frame 0 and frame ``max(i - 1, 0)``,
    concatenated along the token axis (``2n`` keys); frame ``i`` never attends to itself except
    frame 0, whose keys are ``[f0, f0]``. ``W_Q, W_K, W_V`` are the image model's own attn1
    weights, shared across frames. Computed with ``F.scaled_dot_product_attention``.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        num_frames: int = 1,
        frame_window: WindowAnchors | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("sparse-causal attention is self-attention without a mask")
        query, key, value = self.query_key_value(attn, hidden_states, num_frames, frame_window)
        out = F.scaled_dot_product_attention(query, key, value)  # ((b f), heads, n, d)
        return self.output(attn, out)

    @staticmethod
    def query_key_value(attn: Attention, hidden_states: torch.Tensor, num_frames: int,
                        frame_window: WindowAnchors | None = None) -> tuple[torch.Tensor, ...]:
        """Queries ``((b f), heads, n, d)`` of each frame, keys and values ``((b f), heads, 2n, d)`` of frames 0 and
        ``max(i - 1, 0)``. With ``frame_window`` (:class:`~tuneavideo.windows.WindowAnchors`), the frames are one
        window of a longer video: frame 0's keys and values, and those of the frame before the window, come from it."""
        batch_frames, tokens, _ = hidden_states.shape  # ((b f), n, c)
        if batch_frames % num_frames:
            raise ValueError(f"batch of {batch_frames} frames is not a multiple of num_frames={num_frames}")
        batch = batch_frames // num_frames

        query = attn.to_q(hidden_states)  # ((b f), n, inner)
        inner = query.shape[-1]
        head_dim = inner // attn.heads
        key = attn.to_k(hidden_states).view(batch, num_frames, tokens, inner)  # (b, f, n, inner)
        value = attn.to_v(hidden_states).view(batch, num_frames, tokens, inner)
        if frame_window is None:
            first = before = (key[:, :1], value[:, :1])  # frame 0, and frame 0's own max(0 - 1, 0)
        else:
            first, before = frame_window.first_and_before(attn, key, value)

        def first_and_previous(x: torch.Tensor, first: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
            previous = torch.cat([before, x[:, :-1]], dim=1)  # (b, f, n, inner): frame i - 1 of each frame
            x = torch.cat([first.expand(-1, num_frames, -1, -1), previous], dim=2)  # (b, f, 2n, inner)
            return x.view(batch_frames, 2 * tokens, attn.heads, head_dim).transpose(1, 2)  # ((b f), heads, 2n, d)

        query = query.view(batch_frames, tokens, attn.heads, head_dim).transpose(1, 2)  # ((b f), heads, n, d)
        return query, first_and_previous(key, first[0], before[0]), first_and_previous(value, first[1], before[1])

    @staticmethod
    def output(attn: Attention, out: torch.Tensor) -> torch.Tensor:
        """Heads ``((b f), heads, n, d)`` merged and projected: ``((b f), n, c)``."""
        batch_frames, heads, tokens, head_dim = out.shape
        out = out.transpose(1, 2).reshape(batch_frames, tokens, heads * head_dim)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


class PerFrameAttnProcessor(AttnProcessor2_0):
    """Plain per-frame self-attention (the image model's attn1), for ablations: ignores ``num_frames``."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, num_frames=1, frame_window=None):
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask)


class VideoTransformerBlock(nn.Module):
    """Stable Diffusion's transformer block with sparse-causal attn1 and a temporal attention.

    Built from a diffusers ``BasicTransformerBlock``, taking over its modules so that parameter
    names stay ``attn1.to_q``, ``attn2.to_k``, ``ff.net.0.proj`` ..., plus the new ``attn_temp``
    and ``norm_temp`` (names as in the Tune-A-Video reference). Order, each pre-norm with a residual:
    attn1 (sparse-causal), attn2 (cross-attention to the text, per frame), feed-forward, then
    attn_temp (full attention over the frames at each spatial position).
    """

    def __init__(self, block: BasicTransformerBlock):
        super().__init__()
        if block.norm_type != "layer_norm" or block.only_cross_attention or block.pos_embed is not None:
            raise ValueError(
                "only Stable Diffusion 1.x/2.x transformer blocks (layer_norm, self- then cross-attention) "
                f"can be inflated; got norm_type={block.norm_type!r}"
            )
        if block.attn2 is None:
            raise ValueError("a transformer block without cross-attention cannot be inflated")
        self.norm1, self.attn1 = block.norm1, block.attn1
        self.norm2, self.attn2 = block.norm2, block.attn2
        self.norm3, self.ff = block.norm3, block.ff
        self.attn1.set_processor(SparseCausalAttnProcessor())

        dim = self.attn1.query_dim
        self.norm_temp = nn.LayerNorm(dim)
        self.attn_temp = Attention(
            query_dim=dim,
            heads=self.attn1.heads,
            dim_head=self.attn1.inner_dim // self.attn1.heads,
            dropout=self.attn1.to_out[1].p,
            bias=self.attn1.to_q.bias is not None,
            upcast_attention=self.attn1.upcast_attention,
            processor=AttnProcessor2_0(),
        )
        init_temporal(self)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
        cross_attention_kwargs: dict | None = None,
        class_labels: torch.Tensor | None = None,
        added_cond_kwargs: dict | None = None,
    ) -> torch.Tensor:
        num_frames = (cross_attention_kwargs or {}).get("num_frames", 1)
        frame_window = (cross_attention_kwargs or {}).get("frame_window")  # a window of a longer video (windows.py)
        x = hidden_states  # ((b f), n, c)
        x = self.attn1(self.norm1(x), num_frames=num_frames, frame_window=frame_window) + x
        x = self.attn2(self.norm2(x), encoder_hidden_states=encoder_hidden_states, attention_mask=encoder_attention_mask) + x
        x = self.ff(self.norm3(x)) + x

        batch_frames, tokens, channels = x.shape
        batch = batch_frames // num_frames
        x = x.view(batch, num_frames, tokens, channels).transpose(1, 2).reshape(batch * tokens, num_frames, channels)  # ((b n), f, c)
        x = self.attn_temp(self.norm_temp(x)) + x
        x = x.view(batch, tokens, num_frames, channels).transpose(1, 2).reshape(batch_frames, tokens, channels)  # ((b f), n, c)
        return x


@torch.no_grad()
def init_temporal(block: VideoTransformerBlock, generator: torch.Generator | None = None) -> None:
    """The one place for the temporal layers' initialisation.

    Linear layers get PyTorch's default init (``nn.Linear.reset_parameters``' distribution, drawn from
    ``generator``, or torch's global generator when ``None``), ``norm_temp`` is the identity affine, and
    ``attn_temp.to_out`` is zero, weight AND bias: the reference zeroes only the weight and leaves a
    random bias, so its inflated model is not the image model at step 0. With both zero, an inflated
    model fed identical frames reproduces the image model exactly.
    """
    for linear in (block.attn_temp.to_q, block.attn_temp.to_k, block.attn_temp.to_v):
        nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
        if linear.bias is not None:
            bound = 1 / math.sqrt(linear.in_features)
            nn.init.uniform_(linear.bias, -bound, bound, generator=generator)
    block.norm_temp.reset_parameters()
    block.attn_temp.to_out[0].weight.zero_()
    block.attn_temp.to_out[0].bias.zero_()
