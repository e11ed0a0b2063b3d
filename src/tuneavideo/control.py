"""Attention-controlled editing on the video UNet: Prompt-to-Prompt (as Video-P2P runs it) and FateZero's fusion.

An :class:`AttentionController` is a set of diffusers attention processors handed to the pipeline
(``TuneAVideoPipeline(..., controller=...)``); nothing of diffusers is forked. Two ways to edit:

- ``p2p``: Prompt-to-Prompt (Hertz et al., "Prompt-to-Prompt Image Editing with Cross Attention Control", ICLR
  2023) on the tuned video model, as Video-P2P does it (Liu et al., "Video-P2P: Video Editing with Cross-attention
  Control", CVPR 2024). The source prompt and the edit prompt are sampled in one batch from the same inverted
  latents, rows ``[source, edit]`` (with guidance: ``[uncond source, uncond edit, source, edit]``); only the
  conditional rows are controlled, as in the authors' code. For the first ``cross_replace`` of the steps the edit's
  cross-attention maps are the source's: all of them when the prompts have as many tokens (word swap), else those
  of the tokens the prompts share, aligned over the tokenizer's ids, new tokens keeping their own (refinement);
  ``reweight`` then scales the maps of the edit prompt's words. For the first ``self_replace`` of the steps the
  edit's sparse-causal self-attention maps are the source's (at maps of 16x16 tokens or fewer, as P2P). ``blend``
  (local blending): after every step, outside a mask made from the named words' cross-attention, the edit's
  latents are the source branch's.
- ``fatezero``: FateZero (Qi et al., "FateZero: Fusing Attentions for Zero-shot Text-based Video Editing", ICCV
  2023). The self- and cross-attention maps are recorded while the source is inverted with the source prompt
  (:func:`record_attention`), on the CPU in fp16, only at the levels and steps used; the edit alone is sampled. Its
  cross-attention maps are replaced by the recorded ones as above (maps of 32x32 tokens or fewer, as FateZero), and
  its self-attention maps are fused with the recorded ones through the mask of the ``blend`` words' recorded
  cross-attention: ``M * edit + (1 - M) * source`` for the first ``self_replace`` of the steps.

The blend mask (P2P's LocalBlend), per frame: the named words' cross-attention maps (summed over the words' tokens),
averaged over heads and over the layers whose maps have at most 16x16 tokens (each resized to the largest of them),
dilated by a 3x3 max-pool, resized to the latents, normalised to a maximum of 1 and thresholded (0.3 default).

Memory of the FateZero record, per frame (computed by :func:`fatezero_record_bytes` from SD 1.5's UNet config):
at 512x512, 50 steps, the default fractions (cross 0.8, self 0.4) and 77 tokens, 531,046,400 bytes (506 MiB) per
frame: self-attention 202.5 MiB (20 steps, the 16x16 and 8x8 levels), cross-attention 303.8 MiB (40 steps, 32x32 to
8x8), masks 0.16 MiB. A 24-frame clip holds 11.9 GiB of CPU memory; fewer steps or smaller fractions shrink it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from .config import ConfigError, SampleConfig, parse_reweight
from .inversion import ddim_invert
from .models.attention import SparseCausalAttnProcessor
from .windows import FrameWindows

SELF_MAX_TOKENS = 16 * 16  # self-attention is injected at maps of at most 16x16 tokens (P2P's limit)
CROSS_MAX_TOKENS = 32 * 32  # FateZero records and replaces cross-attention at maps of at most 32x32 tokens
MASK_MAX_TOKENS = 16 * 16  # blend masks come from the cross-attention maps of at most 16x16 tokens (P2P's LocalBlend)


# ------------------------------------------------------------------------------------------------------- tokens


def word_tokens(tokenizer, prompt: str, word: str) -> list[int]:
    """Positions (in the padded token sequence, after the start token) of the tokens of each occurrence of ``word``
    (one or more words) in ``prompt``; empty when it does not occur. Words are read from CLIP's ``</w>`` marks."""
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids[1:-1]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    words, current = [], []  # (text, positions) of each word of the prompt
    for position, piece in enumerate(pieces, start=1):
        current.append(position)
        if piece.endswith("</w>"):
            words.append(("".join(pieces[p - 1] for p in current).replace("</w>", ""), current))
            current = []
    wanted = [w.lower() for w in word.split()]
    found: list[int] = []
    for start in range(len(words) - len(wanted) + 1):
        if [w for w, _ in words[start:start + len(wanted)]] == wanted:
            found += [p for _, positions in words[start:start + len(wanted)] for p in positions]
    return found


@dataclass
class TokenPlan:
    """How the edit prompt's tokens relate to the source prompt's: ``mapping[j]``, the source token whose maps token
    ``j`` takes where ``aligned[j]``; ``reweight[j]``, the factor of its maps; the tokens of the blend words."""

    mapping: torch.Tensor  # (l,) long
    aligned: torch.Tensor  # (l,) bool
    reweight: torch.Tensor  # (l,) float
    source_blend: list[int] = field(default_factory=list)
    edit_blend: list[int] = field(default_factory=list)

    @property
    def blends(self) -> bool:
        return bool(self.source_blend or self.edit_blend)


def plan_tokens(tokenizer, source: str, edit: str, reweight: dict[str, float] | None = None,
                blend: list[str] | None = None, blend_in_source: bool = False) -> TokenPlan:
    """Align ``edit``'s tokens with ``source``'s: all of them, position by position, when both have as many tokens
    (P2P's word swap), else the tokens of the matching runs of ids (difflib over the padded ids: P2P's refinement).
    A reweight word missing from ``edit``, or a blend word in neither prompt (in ``source`` with
    ``blend_in_source``), is a :class:`ConfigError` naming it."""
    length = tokenizer.model_max_length

    def ids(prompt: str) -> list[int]:
        return tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids

    def used(prompt: str) -> int:
        return len(tokenizer(prompt, truncation=True, max_length=length).input_ids)

    source_ids, edit_ids = ids(source), ids(edit)
    mapping = torch.arange(length)
    aligned = torch.ones(length, dtype=torch.bool)
    if used(source) != used(edit):
        aligned[:] = False
        matcher = difflib.SequenceMatcher(None, source_ids, edit_ids, autojunk=False)
        for block in matcher.get_matching_blocks():
            mapping[block.b:block.b + block.size] = torch.arange(block.a, block.a + block.size)
            aligned[block.b:block.b + block.size] = True
    factors = torch.ones(length)
    for word, factor in (reweight or {}).items():
        positions = word_tokens(tokenizer, edit, word)
        if not positions:
            raise ConfigError(f"--reweight {word}={factor:g}: '{word}' is not a word of the edit prompt '{edit}'")
        factors[positions] = factor
    plan = TokenPlan(mapping, aligned, factors)
    for word in blend or []:
        in_source, in_edit = word_tokens(tokenizer, source, word), word_tokens(tokenizer, edit, word)
        if blend_in_source and not in_source:
            raise ConfigError(f"--blend {word}: '{word}' is not a word of the source prompt '{source}' "
                              "(FateZero's mask comes from the source's recorded attention)")
        if not in_source and not in_edit:
            raise ConfigError(f"--blend {word}: '{word}' is a word of neither the source prompt '{source}' nor the edit prompt '{edit}'")
        plan.source_blend += in_source
        plan.edit_blend += [] if blend_in_source else in_edit
    return plan


# ---------------------------------------------------------------------------------------------------- processors


def attention_probs(attn: Attention, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``softmax(Q K^T * scale)`` over the keys, the softmax in float32: ``(..., n_query, n_key)``."""
    scores = query @ key.transpose(-1, -2) * attn.scale
    return scores.float().softmax(dim=-1).to(query.dtype)


class ControlledSelfAttnProcessor(SparseCausalAttnProcessor):
    """Sparse-causal self-attention whose maps the controller may replace: explicit ``softmax(Q K^T / sqrt(d)) V``
    where it does, the parent's SDPA elsewhere."""

    def __init__(self, controller: AttentionController, name: str):
        self.controller, self.name = controller, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, num_frames=1, frame_window=None):
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("sparse-causal attention is self-attention without a mask")
        query, key, value = self.query_key_value(attn, hidden_states, num_frames, frame_window)  # ((b f), heads, n | 2n, d)
        if self.controller.wants_self(query.shape[2]):
            probs = self.controller.self_attention(attention_probs(attn, query, key), self.name)  # ((b f), heads, n, 2n)
            out = probs @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value)
        return self.output(attn, out)


class ControlledCrossAttnProcessor:
    """Cross-attention to the text, ``softmax(Q K^T / sqrt(d)) V`` computed explicitly, its maps ``((b f), heads, n,
    l)`` handed to the controller before they weigh the values."""

    def __init__(self, controller: AttentionController, name: str):
        self.controller, self.name = controller, name

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if attention_mask is not None or hidden_states.ndim != 3:
            raise ValueError("controlled cross-attention takes ((b f), n, c) tokens and no mask")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        batch_frames, tokens, _ = hidden_states.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch_frames, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)  # ((b f), heads, n, d)

        query, key, value = heads(attn.to_q(hidden_states)), heads(attn.to_k(context)), heads(attn.to_v(context))
        probs = self.controller.cross_attention(attention_probs(attn, query, key), self.name)  # ((b f), heads, n, l)
        out = (probs @ value).transpose(1, 2).reshape(batch_frames, tokens, -1)  # ((b f), n, inner)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


# ---------------------------------------------------------------------------------------------------- controller


@dataclass
class AttentionRecord:
    """FateZero's record of the inversion with the source prompt, on the CPU in fp16, keyed by the sampling step
    ``i`` the maps serve (the inversion step at the same timestep) and the processor's name: self-attention maps
    ``(f, heads, n, 2n)``, cross-attention maps ``(f, heads, n, l)``, and the blend masks ``(f, 1, h, w)``."""

    self_maps: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    cross_maps: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self.self_maps, self.cross_maps, self.masks) for t in d.values())


class AttentionController:
    """The state the controlled processors share: the step, the token plan, the fractions, the blend maps.

    ``mode``: ``"p2p"`` (batch rows ``[source, edit]``, with guidance twice: unconditional then conditional),
    ``"fatezero"`` (rows ``[edit]``, source maps from ``record``), or ``"record"`` (FateZero's inversion, one row,
    filling ``record``). ``num_frames`` and ``latent_size`` ``(h, w)`` are those of the latents sampled.

    In windows (:mod:`tuneavideo.windows`), the UNet tells :meth:`begin_window` which frames it runs: maps are
    replaced window by window, the record keeps one map per frame of the video (a frame in two windows: the later
    window's), and each window's blend mask fills its frames of the video's mask (a frame in two windows: the union).
    """

    def __init__(self, mode: str, plan: TokenPlan, *, num_frames: int, num_steps: int, latent_size: tuple[int, int],
                 cross_replace: float = 0.8, self_replace: float = 0.4, threshold: float = 0.3,
                 record: AttentionRecord | None = None):
        if mode not in ("p2p", "fatezero", "record"):
            raise ValueError(f"controller mode {mode!r} is unknown; use p2p, fatezero or record")
        if mode != "p2p" and record is None:
            raise ValueError(f"a {mode} controller needs an AttentionRecord")
        self.mode, self.plan, self.record = mode, plan, record
        self.total_frames, self.latent_size = num_frames, latent_size
        self.num_frames, self.span = num_frames, range(num_frames)  # the frames the UNet runs now (one window)
        self.cross_steps = int(num_steps * cross_replace)  # P2P's count: steps 0 .. cross_steps - 1 are replaced
        self.self_steps = int(num_steps * self_replace)
        self.threshold = threshold
        self.step = 0
        self.maps: dict[int, list[torch.Tensor]] = {}  # the blend words' maps of this window, by branch (0 source, 1 edit)
        self.mask: torch.Tensor | None = None  # (total_frames, 1, h, w): this step's blend mask of the windows so far

    # -- the pipeline's calls

    @contextmanager
    def attached(self, unet) -> Iterator[None]:
        """The UNet with controlled attn1 and attn2 processors; its own processors again afterwards."""
        before = unet.attn_processors
        processors = {}
        for name, processor in before.items():
            if name.endswith("attn1.processor"):
                if not isinstance(processor, SparseCausalAttnProcessor):
                    raise ConfigError("attention control needs the sparse-causal self-attention of the method; "
                                      "this model runs another (--frame-attention per-frame?)")
                processors[name] = ControlledSelfAttnProcessor(self, name)
            elif name.endswith("attn2.processor"):
                processors[name] = ControlledCrossAttnProcessor(self, name)
            else:
                processors[name] = processor
        unet.set_attn_processor(processors)
        try:
            yield
        finally:
            unet.set_attn_processor(dict(before))  # (diffusers empties the dict it is given)

    def begin_step(self, step: int) -> None:
        self.step = step
        self.maps, self.mask = {}, None

    def begin_window(self, index: int, span: range) -> None:
        """The UNet runs the frames ``span`` of the video next (window ``index``; one span of all frames unwindowed)."""
        self.close_window()
        self.num_frames, self.span = len(span), span

    def close_window(self) -> None:
        """Merge the blend masks of the window that ran last into the video's mask ``(total_frames, 1, h, w)``: the
        union of the branches' masks, and where windows overlap the union of theirs."""
        if not self.maps:
            return
        mask = torch.stack([self.blend_mask(maps) for maps in self.maps.values()]).amax(0)  # (f, 1, h, w): the union
        if self.mask is None:
            self.mask = mask.new_zeros((self.total_frames, *mask.shape[1:]))
        frames = slice(self.span.start, self.span.stop)
        self.mask[frames] = torch.maximum(self.mask[frames], mask)
        self.maps = {}

    def after_step(self, latents: torch.Tensor) -> torch.Tensor:
        """P2P's local blending: outside the mask, the edit row of ``latents`` ``(2, c, f, h, w)`` is the source's."""
        self.close_window()
        if self.mode != "p2p" or not self.plan.blends or self.mask is None:
            return latents
        mask = self.mask.transpose(0, 1).to(latents.dtype)  # (1, f, h, w), broadcast over channels
        latents[1] = latents[0] + mask * (latents[1] - latents[0])
        return latents

    def finish_record_step(self) -> None:
        """In ``record`` mode, keep this step's blend mask."""
        self.close_window()
        if self.mode == "record" and self.mask is not None and self.step < self.self_steps:
            self.record.masks[self.step] = self.mask.half().cpu()

    # -- the processors' calls

    def wants_self(self, tokens: int) -> bool:
        return tokens <= SELF_MAX_TOKENS and 0 <= self.step < self.self_steps

    def self_attention(self, probs: torch.Tensor, name: str) -> torch.Tensor:
        """Maps ``((b f), heads, n, 2n)``: recorded, copied from the source row, or fused with the recorded ones."""
        video = probs.view(-1, self.num_frames, *probs.shape[1:])  # (b, f, heads, n, 2n)
        frames = slice(self.span.start, self.span.stop)
        if self.mode == "record":
            self.keep(self.record.self_maps, (self.step, name), video[0])
        elif self.mode == "p2p":
            video[-1] = video[-2]
        else:
            source = self.record.self_maps[(self.step, name)][frames].to(probs.device, probs.dtype)
            mask = self.level_mask(self.record.masks[self.step][frames], probs.shape[2]).to(probs.dtype)  # (f, 1, n, 1)
            video[-1] = mask * video[-1] + (1 - mask) * source
        return probs

    def cross_attention(self, probs: torch.Tensor, name: str) -> torch.Tensor:
        """Maps ``((b f), heads, n, l)``: recorded, or the edit row's replaced by the source's and reweighted."""
        video = probs.view(-1, self.num_frames, *probs.shape[1:])  # (b, f, heads, n, l)
        tokens = probs.shape[2]
        replacing = 0 <= self.step < self.cross_steps
        if self.mode == "record":
            if replacing and tokens <= CROSS_MAX_TOKENS:
                self.keep(self.record.cross_maps, (self.step, name), video[0])
            if self.step < self.self_steps:
                self.collect(0, video[0], self.plan.source_blend)
        elif self.mode == "p2p":
            self.collect(0, video[-2], self.plan.source_blend)
            self.collect(1, video[-1], self.plan.edit_blend)
            if replacing:
                video[-1] = self.replace(video[-2], video[-1])
        elif replacing and tokens <= CROSS_MAX_TOKENS:
            source = self.record.cross_maps[(self.step, name)][self.span.start:self.span.stop].to(probs.device, probs.dtype)
            video[-1] = self.replace(source, video[-1])
        return probs

    # -- helpers

    def keep(self, record: dict[tuple[int, str], torch.Tensor], key: tuple[int, str], maps: torch.Tensor) -> None:
        """Record the maps ``(f, ...)`` of the frames the UNet runs now, on the CPU in fp16, at their frames of the
        video's ``(total_frames, ...)`` (a later window overwrites the frames it shares with an earlier one)."""
        maps = maps.half().cpu()
        if len(self.span) == self.total_frames:
            record[key] = maps
            return
        if key not in record:
            record[key] = maps.new_zeros((self.total_frames, *maps.shape[1:]))
        record[key][self.span.start:self.span.stop] = maps

    def replace(self, source: torch.Tensor, edit: torch.Tensor) -> torch.Tensor:
        """The edit's maps ``(f, heads, n, l)`` with the aligned tokens' taken from the source's, then reweighted."""
        plan = self.plan
        mapped = torch.where(plan.aligned.to(edit.device), source[..., plan.mapping.to(edit.device)], edit)
        return mapped * plan.reweight.to(edit.device, edit.dtype)

    def collect(self, branch: int, maps: torch.Tensor, positions: list[int]) -> None:
        """Keep the maps ``(f, heads, n, l)`` of the tokens ``positions``, summed, averaged over heads: ``(f, h', w')``."""
        if not positions or maps.shape[2] > MASK_MAX_TOKENS:
            return
        word = maps[..., positions].sum(-1).mean(1).float()  # (f, n)
        self.maps.setdefault(branch, []).append(word.view(self.num_frames, *self.level_size(maps.shape[2])))

    def level_size(self, tokens: int) -> tuple[int, int]:
        """The ``(h', w')`` of a level with ``tokens`` tokens per frame: the latents' size halved as often as needed."""
        height, width = self.latent_size
        factor = round(math.sqrt(height * width / tokens))
        return -(-height // factor), -(-width // factor)

    def blend_mask(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """One branch's mask ``(f, 1, h, w)`` (0 or 1) from its layers' word maps ``(f, h', w')``."""
        size = max((m.shape[1:] for m in maps), key=lambda s: s[0] * s[1])
        mean = torch.stack([F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False) if m.shape[1:] != size
                            else m[:, None] for m in maps]).mean(0)  # (f, 1, h', w')
        mean = F.max_pool2d(mean, kernel_size=3, stride=1, padding=1)
        mean = F.interpolate(mean, size=self.latent_size, mode="nearest")
        mean = mean / mean.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        return (mean > self.threshold).float()

    def level_mask(self, mask: torch.Tensor, tokens: int) -> torch.Tensor:
        """A mask ``(f, 1, h, w)`` at the level of ``tokens`` tokens per frame: ``(f, 1, n, 1)``, on the query axis."""
        small = F.interpolate(mask.float(), size=self.level_size(tokens), mode="nearest")  # (f, 1, h', w')
        return small.flatten(2)[..., None]


# ---------------------------------------------------------------------------------------------- building them


def build_controller(tokenizer, sample: SampleConfig, source_prompt: str, edit_prompt: str, *, num_frames: int,
                     latent_size: tuple[int, int], record: AttentionRecord | None = None) -> AttentionController:
    """The controller ``sample.control`` asks for, from the sample settings (``fatezero``: with its ``record``)."""
    plan = plan_tokens(tokenizer, source_prompt, edit_prompt, parse_reweight(sample.reweight), sample.blend,
                       blend_in_source=sample.control == "fatezero")
    return AttentionController(sample.control, plan, num_frames=num_frames, num_steps=sample.num_inference_steps,
                               latent_size=latent_size, cross_replace=sample.cross_replace,
                               self_replace=sample.self_replace, threshold=sample.blend_threshold, record=record)


def record_attention(unet, scheduler, latents: torch.Tensor, context: torch.Tensor, tokenizer, sample: SampleConfig,
                     source_prompt: str, *, latent_size: tuple[int, int], callback=None,
                     windows: FrameWindows | None = None) -> tuple[torch.Tensor, AttentionRecord]:
    """FateZero's inversion: DDIM-invert ``latents`` ``(1, c, f, h, w)`` with the source prompt's embedding
    ``context``, recording the maps the edit will use. Returns the inverted latents and the record. ``windows``: the
    UNet runs on windows of frames, as the edit's sampling must then too."""
    steps = sample.num_inference_steps
    record = AttentionRecord()
    plan = plan_tokens(tokenizer, source_prompt, source_prompt, blend=sample.blend, blend_in_source=True)
    recorder = AttentionController("record", plan, num_frames=latents.shape[2], num_steps=steps, latent_size=latent_size,
                                   cross_replace=sample.cross_replace, self_replace=sample.self_replace,
                                   threshold=sample.blend_threshold, record=record)
    recorder.begin_step(steps - 1)  # inversion step j runs at the timestep of sampling step steps - 1 - j

    def advance(done: int, total: int) -> None:
        recorder.finish_record_step()
        recorder.begin_step(total - 1 - done)
        if callback is not None:
            callback(done, total)

    with recorder.attached(unet):
        inverted = ddim_invert(unet, scheduler, latents, context, steps, callback=advance, windows=windows,
                               on_window=recorder.begin_window)
    return inverted, record


def fatezero_record_bytes(unet_config: dict, height: int, width: int, *, num_steps: int = 50, cross_replace: float = 0.8,
                          self_replace: float = 0.4, tokens: int = 77, latent_scale: int = 8, itemsize: int = 2) -> dict:
    """Bytes per frame of FateZero's :class:`AttentionRecord` for a UNet config (one transformer layer per
    attention block, as SD 1.x/2.x) at ``height`` x ``width`` pixels: ``{"self": ..., "cross": ..., "masks": ...,
    "total": ...}``, fp16 maps (masks at the latents' size)."""
    channels = unet_config["block_out_channels"]
    heads = unet_config.get("num_attention_heads") or unet_config["attention_head_dim"]
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(channels)
    layers = unet_config["layers_per_block"]
    size = (height // latent_scale) * (width // latent_scale)
    blocks = []  # (tokens per frame, heads) of each transformer layer
    for level, kind in enumerate(unet_config["down_block_types"]):
        blocks += [(size // 4 ** level, heads[level])] * (layers if "CrossAttn" in kind else 0)
    blocks.append((size // 4 ** (len(channels) - 1), heads[-1]))  # the mid block
    for index, kind in enumerate(unet_config["up_block_types"]):
        level = len(channels) - 1 - index
        blocks += [(size // 4 ** level, heads[level])] * ((layers + 1) if "CrossAttn" in kind else 0)
    self_steps, cross_steps = int(num_steps * self_replace), int(num_steps * cross_replace)
    self_bytes = sum(h * n * 2 * n for n, h in blocks if n <= SELF_MAX_TOKENS) * self_steps * itemsize
    cross_bytes = sum(h * n * tokens for n, h in blocks if n <= CROSS_MAX_TOKENS) * cross_steps * itemsize
    mask_bytes = size * self_steps * itemsize
    return {"self": self_bytes, "cross": cross_bytes, "masks": mask_bytes, "total": self_bytes + cross_bytes + mask_bytes}
