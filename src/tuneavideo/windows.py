"""Frame windows: invert and edit videos longer than the tuned clip with memory bounded by a window.

The inflated UNet mixes frames three ways, and each is treated on its own terms:

- **sparse-causal attention** (attn1) reads, for frame ``i``, the keys and values of frame 0 and frame ``i - 1``
  only, so it stays exact at any length. Windows run in order, left to right; in each window the attn1 layers take
  frame 0's keys and values, and those of the frame just before the window, from the window that computed them
  (:class:`WindowAnchors`, handed through the UNet's attention processors). Every frame thus attends to exactly the
  features frames 0 and ``i - 1`` had where they were computed. Deliberately not done: prepending frame 0's latent
  to each window and dropping its output. That recomputes frame 0 (and would need frame ``i - 1`` as well) inside
  every window among other temporal neighbours, so its keys would change from window to window, and it would put
  extra frames into the window's temporal attention and norms.
- **temporal attention** (attn_temp) and the **pooled GroupNorm statistics** act on the ``W`` frames of a window
  (default ``W``: the tuned clip's length), as they did in tuning.
- At every UNet call (each denoising step, each inversion step), the windows' outputs are blended where windows
  overlap, with linear ramps normalised to sum to one per frame: the context windows of long video sampling
  (AnimateDiff-style "context_length / context_overlap"; Wang et al., "Gen-L-Video", 2023, fuse overlapping clips
  the same way at every step).

Windows start at frame 0 and advance by ``W - O`` frames; the last one is moved back to end at the last frame, so
every window has ``W`` frames. A window at least as long as the video is the whole video: the UNet is called once,
exactly as without windows. Windows run one after the other, so peak memory grows with the number of frames only
through the latents (and the blended output, the same size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import nn

from .config import ConfigError

#: The default overlap, as a fraction of the window: a quarter (4 frames of a 16-frame window).
DEFAULT_OVERLAP_FRACTION = 0.25


@dataclass(frozen=True)
class FrameWindows:
    """Windows of ``size`` frames, neighbours sharing ``overlap`` frames (at least; the last window may share more)."""

    size: int
    overlap: int = 0

    def __post_init__(self):
        if self.size < 1 or not 0 <= self.overlap < self.size:
            raise ConfigError(f"window {self.size} with overlap {self.overlap}: the window must be at least 1 frame and "
                              "the overlap between 0 and one less than the window; use e.g. --window 16 --overlap 4")

    @classmethod
    def resolve(cls, window: int, overlap: int, tuned_frames: int | None, num_frames: int) -> FrameWindows | None:
        """The windows of an edit of ``num_frames`` frames: ``window`` frames (0: ``tuned_frames``, or the whole video
        when that is unknown), ``overlap`` frames shared (-1: a quarter of the window). ``None`` when one window holds
        the whole video (the model runs unwindowed, exactly as before)."""
        size = window or tuned_frames or num_frames
        if size >= num_frames:
            return None
        if overlap < 0:
            overlap = int(size * DEFAULT_OVERLAP_FRACTION)
        if overlap >= size:
            raise ConfigError(f"overlap {overlap} must be smaller than the window of {size} frames; use e.g. --overlap {size // 4}")
        return cls(size, overlap)

    def spans(self, num_frames: int) -> list[range]:
        """The frames of each window, in order: ``range(start, start + size)``; one span for a short video."""
        if self.size >= num_frames:
            return [range(num_frames)]
        step = self.size - self.overlap
        starts = list(range(0, num_frames - self.size, step)) + [num_frames - self.size]
        return [range(s, s + self.size) for s in starts]

    def weights(self, num_frames: int) -> torch.Tensor:
        """Blend weights ``(windows, num_frames)``: zero outside a window; inside, a linear ramp up over the frames it
        shares with the previous window and down over those it shares with the next (``(j + 1) / (L + 1)`` over ``L``
        shared frames, so two windows' ramps already sum to one), then divided by their sum per frame, so the
        weights of every frame sum to one also where three windows meet."""
        spans = self.spans(num_frames)
        weights = torch.zeros(len(spans), num_frames, dtype=torch.float64)
        for k, span in enumerate(spans):
            ramp = torch.ones(len(span), dtype=torch.float64)
            j = torch.arange(len(span), dtype=torch.float64)
            if k > 0:
                shared = spans[k - 1].stop - span.start
                ramp = torch.minimum(ramp, (j + 1) / (shared + 1))
            if k + 1 < len(spans):
                shared = span.stop - spans[k + 1].start
                ramp = torch.minimum(ramp, (len(span) - j) / (shared + 1))
            weights[k, span.start:span.stop] = ramp
        return (weights / weights.sum(0, keepdim=True)).float()


class WindowAnchors:
    """Sparse-causal attention across the windows of one UNet call: each attn1 layer's keys and values of frame 0 and
    of the frame before the next window, kept from the window that computed them until a later window reads them.

    Handed to :class:`~tuneavideo.models.attention.SparseCausalAttnProcessor` as ``frame_window``; the processor
    calls :meth:`first_and_before` with its keys and values ``(b, f, n, inner)`` of the window's frames.
    """

    def __init__(self, spans: list[range]):
        self.spans = spans
        self.index = 0
        self._first: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        self._before: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def begin(self, index: int) -> None:
        self.index = index

    def first_and_before(self, attn: nn.Module, key: torch.Tensor, value: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], ...]:
        """``((key, value) of frame 0, (key, value) of the frame before the window's first)``, each ``(b, 1, n, inner)``;
        for the first window (which holds frame 0) both are frame 0's own, as ``max(i - 1, 0)`` says."""
        span = self.spans[self.index]
        if span.start == 0:
            first = before = (key[:, :1], value[:, :1])
            self._first[attn] = first
        else:
            first, before = self._first[attn], self._before.pop(attn)
        if self.index + 1 < len(self.spans):
            j = self.spans[self.index + 1].start - 1 - span.start  # the next window's frame i - 1, in this window
            self._before[attn] = (key[:, j:j + 1], value[:, j:j + 1])
        return first, before


class WindowedUNet:
    """A :class:`~tuneavideo.models.TuneAVideoUNet` called window by window: the same call and output,
    ``(sample (b, c, f, h, w), timestep, encoder_hidden_states) -> UNet2DConditionOutput``.

    ``windows=None``, or windows at least as long as the video, is one plain call of the UNet. ``on_window(index,
    span)`` is told before each window runs (attention control keeps its maps per window).
    """

    def __init__(self, unet: nn.Module, windows: FrameWindows | None,
                 on_window: Callable[[int, range], None] | None = None):
        self.unet, self.windows, self.on_window = unet, windows, on_window

    def __call__(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor) -> UNet2DConditionOutput:
        frames = sample.shape[2]
        spans = self.windows.spans(frames) if self.windows is not None else [range(frames)]
        if len(spans) == 1:
            if self.on_window is not None:
                self.on_window(0, spans[0])
            return self.unet(sample, timestep, encoder_hidden_states)
        weights = self.windows.weights(frames).to(sample.device)  # (windows, f)
        anchors = WindowAnchors(spans)
        out = None
        for index, span in enumerate(spans):
            if self.on_window is not None:
                self.on_window(index, span)
            anchors.begin(index)
            part = self.unet(sample[:, :, span.start:span.stop], timestep, encoder_hidden_states, frame_window=anchors).sample
            if out is None:
                out = sample.new_zeros((sample.shape[0], part.shape[1], *sample.shape[2:]), dtype=torch.float32)  # (b, c, f, h, w)
            out[:, :, span.start:span.stop] += part.float() * weights[index, span.start:span.stop].view(1, 1, -1, 1, 1)
        return UNet2DConditionOutput(sample=out)
