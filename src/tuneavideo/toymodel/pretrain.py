"""Pre-train the toy text-to-image latent diffusion model ("toy-sd") on the procedural toy world.

Stable Diffusion's weights cannot be downloaded everywhere, so the project ships a small model with
exactly Stable Diffusion's layout (``AutoencoderKL``, ``UNet2DConditionModel`` with SD's block types
and layer-norm transformer blocks, ``CLIPTextModel`` + ``CLIPTokenizer``, SD's noise schedule),
trained on 64x64 renders of :mod:`tuneavideo.toyworld` with their captions. It loads with
``StableDiffusionPipeline.from_pretrained`` like a real SD base, and Tune-A-Video inflates it as it
inflates SD.

Training, all on the CPU and seeded:

1. **VAE** (64x64x3 -> 16x16x4): reconstruction (MSE + L1, object pixels weighted up) plus a small
   KL term, on freshly rendered scenes.
2. **Latent cache**: a fixed set of rendered training scenes is encoded once (posterior mean and
   std); the latent scaling factor is set so that scaled latents have unit variance.
3. **UNet** (the text encoder stays frozen at its seeded initialisation, as Stable Diffusion keeps CLIP):
   epsilon prediction (Stable Diffusion 1.x's objective) with min-SNR-5 weights at uniformly random timesteps
   of SD's scaled-linear schedule, the timestep and pooled caption embedding scaling and shifting every ResNet
   block's features (FiLM), on posterior samples of the cached latents with random caption
   templates (10% empty captions, for classifier-free guidance with ``""`` as the unconditional prompt);
   AdamW, warm-up then cosine decay; an exponential moving average (EMA) of the UNet is what is saved.
4. **Video phase**: the UNet is trained on with the ResNet GroupNorm statistics that Tune-A-Video's inflated UNet
   pools over a video's frames pooled over the frames of rendered training clips (and, in some steps, single frames
   with their own statistics), so that frames sampled together keep their feature scale as Stable Diffusion's do.
   The result is still an image model: same layout, same weight names.

The (colour, shape, background) combinations in :data:`~tuneavideo.toymodel.data.HELD_OUT` are never
rendered during training; :mod:`tuneavideo.toymodel.evaluate` measures the model on them.

Command line::

    python -m tuneavideo.toymodel.pretrain --output DIR            # the shipped recipe (about 2 hours, one core)
    python -m tuneavideo.toymodel.pretrain --output DIR --fast     # a few minutes: a smoke-test model
    python -m tuneavideo.toymodel.pretrain --output DIR --resume   # continue an interrupted run to the same weights
    python -m tuneavideo.toymodel.pretrain --output DIR --resume --set video_stop_step=2000  # ... and stop it there again
    python -m tuneavideo.toymodel.pretrain --output DIR --device cuda --unet-steps 40000 \
        --set unet_groups=4                                         # any PretrainConfig field: --set NAME=VALUE
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import HELD_OUT, render_batch, random_caption, scene_attributes, training_scene
from .tokenizer import MODEL_MAX_LENGTH, load_tokenizer, save_tokenizer_files

__all__ = ["CHECKPOINT_DIR", "FAST", "FULL", "HELD_OUT", "RESUMABLE_CHANGES", "PretrainConfig", "SD_SCHEDULER", "build_models", "check_config", "clip_noise", "draw_timesteps", "jitter_timesteps", "loss_weights", "pretrain",
           "save_pipeline", "scheduler_config"]

#: Stable Diffusion 1.x's scheduler config (the PNDM scheduler it ships with; the schedule is what matters).
SD_SCHEDULER: dict = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
    "skip_prk_steps": True,
    "prediction_type": "epsilon",
    "trained_betas": None,
}

IMAGE_SIZE = 64

#: Folder of the output where an unfinished run keeps its resumable state (removed when the run completes).
CHECKPOINT_DIR = "checkpoint"

#: Settings a resumed run may change: none of them changes the arithmetic of the steps.
RESUMABLE_CHANGES = frozenset({"max_minutes", "unet_stop_step", "video_stop_step", "log_every", "snapshot_dir",
                               "checkpoint_every"})


def scheduler_config(prediction_type: str = "epsilon") -> dict:
    """:data:`SD_SCHEDULER` with ``prediction_type`` set (``"v_prediction"`` is what Stable Diffusion 2.x uses)."""
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', not {prediction_type!r}")
    return dict(SD_SCHEDULER, prediction_type=prediction_type)


@dataclass(frozen=True)
class PretrainConfig:
    """Every setting of a pre-training run (the defaults are the shipped model's run)."""

    seed: int = 0
    # one thread: on a shared 2-core machine two OpenMP threads stall each other whenever another
    # process takes a core (measured 5-10x slower steps), one thread runs steadily
    threads: int = 1
    # architecture
    vae_channels: tuple[int, ...] = (16, 32, 64)  # 3 levels: 64x64 -> 16x16 latents (scale 4)
    vae_groups: int = 8
    # 64 channels at the 16x16 level, where the objects' outlines are drawn (32 there learned shapes as well on
    # held-out prompts but edited worse under the method's pooled GroupNorm statistics)
    unet_channels: tuple[int, ...] = (64, 64, 128)
    # which UNet levels have transformer blocks (self- and cross-attention), from the full-resolution level
    # down; Stable Diffusion 1.x's layout has them on all but the lowest (the mid block always has one)
    unet_attention: tuple[bool, ...] = (False, True, False)
    unet_heads: int = 4
    # also condition every ResNet block on the caption through the timestep embedding (diffusers'
    # ``addition_embed_type="text"``: an attention-pooled text embedding added to it), not only the attention levels
    pooled_text_conditioning: bool = True
    # how the timestep (+ pooled caption) embedding enters each ResNet block: "default" adds a per-channel shift
    # (Stable Diffusion), "scale_shift" also scales the normalised features (FiLM; the improved DDPM / ADM layout)
    unet_time_scale_shift: str = "scale_shift"
    unet_groups: int = 16
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    # Train the text encoder with the UNet, or keep its seeded random initialisation frozen (as Stable Diffusion keeps
    # CLIP). Trained jointly, it learned to drop the shape words: in an earlier shipped model the outputs for "a red
    # circle on green grass" and "a red square on green grass" differed by 0.86 (norm over the 16 token states; 12.3
    # at initialisation; red -> blue 18.0). Frozen, the words stay as far apart as at initialisation.
    train_text_encoder: bool = False
    # VAE training. 3000 steps: with 1000 the outlined world's VAE keeps an object's colour through its round trip in
    # 68 % of validation renders (reconstruction loss 0.055), with 3000 in 99 % (0.014) (benchmarks/outline_latents.py);
    # the models trained on them draw the prompted colour in 77 % and 87.5 % of held-out samples (benchmarks/README.md,
    # "The outline").
    vae_steps: int = 3000
    vae_batch: int = 8
    vae_lr: float = 2e-3
    kl_weight: float = 1e-6  # relative to the per-pixel reconstruction loss, per latent element
    object_weight: float = 4.0  # extra reconstruction weight on object pixels
    # initial log-variance of the VAE posterior (bias of quant_conv's logvar half): starting with little
    # sampling noise (std ~0.05) instead of std 1 makes the VAE learn colours several times faster
    vae_logvar_init: float = -6.0
    # latent cache
    num_scenes: int = 12000
    # UNet (and text encoder) training
    unet_steps: int = 8000
    unet_batch: int = 32
    lr: float = 8e-4
    warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    decay_fraction: float = 0.4  # constant learning rate, then cosine decay over this last part of the steps
    weight_decay: float = 0.01
    # what the UNet predicts: "epsilon" (Stable Diffusion 1.x) or "v_prediction" (Stable Diffusion 2.x)
    prediction_type: str = "epsilon"
    # Loss weighting, as a weight on the squared error of the clean latent x0 that the prediction implies (the
    # epsilon error is SNR times it, the v error SNR + 1 times it): max(min(SNR, min_snr_gamma), x0_weight_floor).
    # Min-SNR alone (Hang et al. 2023; plain epsilon MSE clipped at low noise) weights x0 by SNR, 0.005-0.1 at
    # t = 650-1000, where the object's place and shape are decided. A floor of 1 with v-prediction weights those
    # timesteps as v-prediction's plain MSE does; that model's frames drifted apart in feature scale under the
    # method's pooled GroupNorm statistics (own/pooled std 0.63-1.56), so the shipped recipe is min-SNR epsilon.
    min_snr_gamma: float = 5.0
    x0_weight_floor: float = 0.0
    # "offset noise": extra per-(sample, channel) constant noise of this std. Stable Diffusion's schedule keeps
    # sqrt(alpha_bar) = 0.068 of the image at t = 999, and the backgrounds' latent means differ by 1-2 per
    # channel, so without it the model reads the background off the noisy latents at every timestep, never
    # learns it from the caption, and draws a grey-ish background from pure noise. At 0.5 the background is
    # hidden in the noise above t ~ 700, where layouts are decided.
    offset_noise: float = 0.5
    # extra weight of the noise-prediction error on latent pixels at and next to the object (0: plain MSE): the
    # object is a tenth of the image, and its shape a few latent pixels; without it the model learns the
    # background and the colour first and draws the same blob for every shape
    object_loss_weight: float = 4.0
    # share of each batch whose timesteps are drawn from the noisier half of the schedule (t >= 500) instead of
    # all of it: 0 samples timesteps uniformly; 0.5 puts three quarters of the samples at t >= 500
    high_noise_share: float = 0.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    clip_caption_probability: float = 0.3
    max_grad_norm: float = 1.0
    # safety net: stop the UNet phase after this many minutes of the whole run (None: never)
    max_minutes: float | None = None
    # stop the UNet phase after this many steps (the learning-rate schedule still spans unet_steps):
    # reproduces a run that max_minutes cut short
    unet_stop_step: int | None = None
    # write a resumable state (OUTPUT/checkpoint/state.pt) every this many UNet steps (0: never); `--resume`
    # continues from it to the weights the uninterrupted run gives
    checkpoint_every: int = 250
    # start from the VAE of an earlier run's pipeline folder instead of a fresh one (with vae_steps=0 the
    # VAE phase is skipped; its scaling factor is recomputed from the latent cache)
    vae_from: str | None = None
    # start the video phase from the UNet of an earlier run's pipeline folder (same architecture) instead of training
    # one: the UNet phase is skipped. With the earlier run's seed and settings this gives the full run's weights.
    unet_from: str | None = None
    # Video phase, after the UNet phase: the UNet (its EMA weights) is trained on, with the GroupNorm statistics that
    # Tune-A-Video pools over a video's frames pooled over the frames of rendered clips. Stable Diffusion's frames keep
    # their feature statistics under that pooling; a small model trained on single images alone does not: sampled
    # jointly, its frames drifted apart (a frame's own feature std over the pooled one 0.65-1.57, mean |ratio - 1|
    # 0.10 on validation clips), until frames lost their object. The weights stay an image model's (same layout, same
    # names; one image is a clip of one frame). 0 steps: no video phase.
    video_steps: int = 3000
    video_frames: int = 8  # frames per training clip (the demo's and the benchmark's length); divides unet_batch
    num_videos: int = 1000  # rendered training clips (none of a held-out combination), encoded once
    video_lr: float = 2e-4  # warm-up 20 steps, constant, cosine to 0.1x over the last half
    video_image_share: float = 0.3  # share of the steps that train on single frames (statistics per frame)
    # False: the clip steps normalise each frame by its own statistics, as single frames are (a control that keeps
    # the clip batches, captions, timesteps and noise and takes the pooling away)
    video_pool_statistics: bool = True
    # the clip steps' timesteps are drawn from [first, last) (single frames keep the whole schedule): where in the
    # schedule the pooled statistics are trained
    video_clip_timesteps: tuple[int, int] = (0, SD_SCHEDULER["num_train_timesteps"])
    video_caption_probability: float = 0.7  # share of a clip's captions that use a clip template
    video_ema_decay: float = 0.995
    # largest share of the noise variance that a clip's frames have in common (0: independent noise per frame): each
    # clip draws its share uniformly in [0, this]. Tune-A-Video samples from DDIM-inverted latents, and the inverted
    # latents of a clip's frames are alike wherever the frames are (its background), unlike independent noise.
    video_noise_sharing: float = 0.0
    # each frame of a clip is noised at the clip's timestep moved by an integer drawn uniformly from [-this, this]
    # (clamped to the schedule; 0: one timestep per clip), so that frames sharing their statistics differ in noise level
    video_timestep_jitter: int = 0
    # weight of a second loss term in the video phase's clip steps: the mean over every pooled GroupNorm, frame and group
    # of log(sigma_f / sigma_pool)^2, a frame's own feature std over the clip's (:func:`frame_spread_penalty`), so
    # that the frames keep their statistics under pooling instead of being trained only to denoise despite them (0: off).
    # 0.3, the bundled model's (0 before it): on 12 validation clips its frames drift 0.019 under pooled statistics,
    # the same phase without it 0.070; 0.1 drifted 0.022 and edited worse (benchmarks/README.md, "The spread penalty
    # on the second draw")
    video_norm_penalty: float = 0.3
    # the penalty only on the pooled norms whose input is at most this many latent pixels wide (the UNet's deepest
    # level, 4, is where the frames part most); 0: on every pooled norm
    video_norm_penalty_max_size: int = 0
    # weight of a third loss term in the clip steps: the mean over every pooled GroupNorm (up to
    # video_norm_penalty_max_size), frame and group of ((mu_f - mu_pool) / sigma_pool)^2, how far a frame's own group
    # mean sits from the clip's in units of the pooled std (:func:`frame_offset_penalty`): what pooling leaves in a
    # frame once the spread penalty holds its scale (0: off)
    video_norm_offset_penalty: float = 0.0
    # std of a random factor exp(N(0, this^2)), one per frame and group, that scales each frame's input to every pooled
    # GroupNorm in the clip steps: frames off their clip's feature scale, as the drift leaves them when the method
    # samples, so that the layers after the norms learn to denoise despite it rather than pass it on (0: off; its own
    # random stream, so the other draws stay the run's without it)
    video_frame_scale_noise: float = 0.0
    # stop the video phase after this many steps (the learning-rate schedule still spans video_steps)
    video_stop_step: int | None = None
    # monitoring and storage
    log_every: int = 50
    monitor_every: int = 500  # quick held-out sampling check (0: off)
    snapshot_dir: str | None = None  # where the monitor writes its sample grid and the current pipeline
    unet_storage_dtype: str = "float32"  # the weights on disk ("float16" halves the size; loaded back as float32)
    vae_storage_dtype: str = "float32"


#: The shipped model's run.
FULL = PretrainConfig()

#: A few minutes: a usable-looking smoke-test model (not the shipped quality).
FAST = replace(
    FULL, vae_steps=300, num_scenes=2000, unet_steps=300, warmup_steps=30, ema_decay=0.99, monitor_every=0, log_every=25,
    video_steps=100, num_videos=100, video_ema_decay=0.99,
)


# --------------------------------------------------------------------------------------------- models


def build_models(config: PretrainConfig, tokenizer) -> tuple:
    """Fresh ``(vae, text_encoder, unet)`` for ``config`` (seeded by the caller)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    levels = len(config.vae_channels)
    if len(config.unet_attention) != len(config.unet_channels):
        raise ValueError(f"unet_attention names {len(config.unet_attention)} levels, unet_channels {len(config.unet_channels)}")
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.vae_channels),
        layers_per_block=1,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=config.vae_groups,
        sample_size=IMAGE_SIZE,
        scaling_factor=1.0,  # set from the data after the VAE is trained
    )
    with torch.no_grad():  # quant_conv maps to (mean, logvar): start with a small, nearly constant logvar
        latent = vae.config.latent_channels
        vae.quant_conv.weight[latent:] *= 0.1
        vae.quant_conv.bias[latent:] = config.vae_logvar_init
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.text_width,
        intermediate_size=4 * config.text_width,
        projection_dim=config.text_width,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = CLIPTextModel(text_config)
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2 ** (levels - 1),
        in_channels=4,
        out_channels=4,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.unet_attention),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.unet_attention)),
        block_out_channels=tuple(config.unet_channels),
        layers_per_block=1,
        norm_num_groups=config.unet_groups,
        cross_attention_dim=config.text_width,
        attention_head_dim=config.unet_heads,  # diffusers' SD configs store the number of heads here
        **(dict(addition_embed_type="text", addition_embed_type_num_heads=config.unet_heads)
           if config.pooled_text_conditioning else {}),
        resnet_time_scale_shift=config.unet_time_scale_shift,
        flip_sin_to_cos=True,
        freq_shift=0,
    )
    return vae, text_encoder, unet


def loss_weights(alphas_cumprod: torch.Tensor, config: PretrainConfig) -> torch.Tensor:
    """Per-timestep weight of the prediction's squared error (epsilon or v, as ``config.prediction_type``), so
    that the implied x0 error is weighted ``max(min(SNR, min_snr_gamma), x0_weight_floor)`` (no ``min_snr_gamma``:
    no clipping)."""
    snr = alphas_cumprod / (1 - alphas_cumprod)
    x0_weight = torch.clamp(snr, max=config.min_snr_gamma) if config.min_snr_gamma else snr.clone()
    x0_weight = torch.clamp(x0_weight, min=config.x0_weight_floor)
    # squared prediction error = (SNR or SNR + 1) x squared x0 error
    return x0_weight / (snr + 1 if config.prediction_type == "v_prediction" else snr)


def draw_timesteps(config: PretrainConfig, num_train_timesteps: int, gen: torch.Generator) -> torch.Tensor:
    """``config.unet_batch`` training timesteps: uniform, except that a ``config.high_noise_share`` of them (each
    independently) come from the noisier half of the schedule only. With no share the draws are exactly
    ``torch.randint``'s, so runs from before the option reproduce."""
    timesteps = torch.randint(0, num_train_timesteps, (config.unet_batch,), generator=gen)
    if config.high_noise_share:
        upper = torch.randint(num_train_timesteps // 2, num_train_timesteps, (config.unet_batch,), generator=gen)
        timesteps = torch.where(torch.rand(config.unet_batch, generator=gen) < config.high_noise_share, upper, timesteps)
    return timesteps


def _storage_copy(module: torch.nn.Module, dtype_name: str) -> torch.nn.Module:
    """A copy of ``module`` with its floating-point weights in ``dtype_name`` (for saving)."""
    import copy

    dtype = getattr(torch, dtype_name)
    module = copy.deepcopy(module)
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(dtype)
    return module


def save_pipeline(folder: str | Path, vae, text_encoder, tokenizer_dir: Path, unet, config: PretrainConfig) -> Path:
    """Write a Stable Diffusion pipeline folder (``model_index.json`` and the five component folders)."""
    import shutil

    from diffusers import PNDMScheduler

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if (folder / name).exists():
            shutil.rmtree(folder / name)
    _storage_copy(unet, config.unet_storage_dtype).save_pretrained(folder / "unet", safe_serialization=True)
    _storage_copy(vae, config.vae_storage_dtype).save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.to(torch.float32).save_pretrained(folder / "text_encoder", safe_serialization=True)
    shutil.copytree(tokenizer_dir, folder / "tokenizer")
    sd_scheduler = scheduler_config(config.prediction_type)
    scheduler = PNDMScheduler(**{k: v for k, v in sd_scheduler.items() if k != "clip_sample"})
    scheduler.save_pretrained(folder / "scheduler")
    # SD's scheduler_config.json also names clip_sample (used by the DDIM scheduler it is swapped for)
    path = folder / "scheduler" / "scheduler_config.json"
    written = json.loads(path.read_text(encoding="utf-8"))
    written.update({k: v for k, v in sd_scheduler.items() if k not in written})
    path.write_text(json.dumps(dict(sorted(written.items())), indent=2) + "\n", encoding="utf-8")
    import diffusers

    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------------------- helpers


class _Log:
    def __init__(self, progress: bool, start: float):
        self.progress = progress
        self.start = start

    def __call__(self, message: str) -> None:
        if self.progress:
            minutes = (time.time() - self.start) / 60
            print(f"[{minutes:6.1f} min] {message}", flush=True)


def _lr_factor(step: int, total: int, warmup: int, final: float, decay_fraction: float = 1.0) -> float:
    """Linear warm-up, constant, then cosine decay to ``final`` over the last ``decay_fraction`` of the
    steps (fractions of the peak learning rate)."""
    if step < warmup:
        return (step + 1) / warmup
    decay_start = max(warmup, total - int(round(decay_fraction * (total - warmup))))
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def _caption_caches(tokenizer, text_encoder, device: torch.device):
    """``(ids, frozen_states)``: token ids ``(n, max_length)`` of a list of captions, and the text encoder's
    last hidden states of them (for a frozen encoder; ``(n, max_length, width)``), each computed once per distinct
    caption (the toy world has a few thousand) and then looked up."""
    id_cache: dict[str, torch.Tensor] = {}
    state_cache: dict[str, torch.Tensor] = {}

    def ids(captions: list[str]) -> torch.Tensor:
        new = sorted({c for c in captions if c not in id_cache})
        if new:
            rows = tokenizer(new, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids
            id_cache.update(zip(new, rows))
        return torch.stack([id_cache[c] for c in captions])

    @torch.no_grad()
    def frozen_states(captions: list[str]) -> torch.Tensor:
        new = sorted({c for c in captions if c not in state_cache})
        for caption in new:  # one at a time, so a caption's states do not depend on the batch it first came in
            state_cache[caption] = text_encoder(ids([caption]).to(device))[0][0]
        return torch.stack([state_cache[c] for c in captions])

    return ids, frozen_states


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)


def _train_vae(vae, config: PretrainConfig, rng: np.random.Generator, gen: torch.Generator, log: _Log) -> dict:
    vae.train()
    device = next(vae.parameters()).device
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    warmup = max(1, min(50, config.vae_steps // 10))
    history, t0 = [], time.time()
    for step in range(config.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = config.vae_lr * _lr_factor(step, config.vae_steps, warmup, 0.05)
        scenes = [training_scene(rng) for _ in range(config.vae_batch)]
        images, masks = (torch.from_numpy(a).to(device) for a in render_batch(scenes, IMAGE_SIZE))
        posterior = vae.encode(images).latent_dist
        latents = posterior.sample(generator=gen)
        recon = vae.decode(latents).sample
        err = recon - images
        weight = 1.0 + config.object_weight * masks
        rec_loss = (weight * (err.square() + 0.1 * err.abs())).mean()
        kl = posterior.kl().mean() / latents[0].numel()
        loss = rec_loss + config.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        history.append((rec_loss.item(), kl.item()))
        if config.log_every and ((step + 1) % config.log_every == 0 or step + 1 == config.vae_steps):
            recent = np.mean(history[-config.log_every :], axis=0)
            log(f"vae step {step + 1}/{config.vae_steps}  rec {recent[0]:.5f}  kl/elem {recent[1]:.3f}")
    vae.eval()
    tail = np.mean(history[-max(1, len(history) // 10) :], axis=0) if history else (float("nan"), float("nan"))
    return {"seconds": time.time() - t0, "final_reconstruction_loss": float(tail[0]), "final_kl_per_element": float(tail[1])}


@torch.no_grad()
def _encode_scenes(vae, scenes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render and encode ``scenes``: posterior means and stds ``(n, 4, h, w)`` and latent object masks
    ``(n, 1, h, w)`` (uint8)."""
    device = next(vae.parameters()).device
    means, stds, object_masks = [], [], []
    chunk = 256
    for start in range(0, len(scenes), chunk):
        images, masks = render_batch(scenes[start : start + chunk], IMAGE_SIZE)
        posterior = vae.encode(torch.from_numpy(images).to(device)).latent_dist
        means.append(posterior.mean.cpu())
        stds.append(posterior.std.cpu())
        # latent pixels that see the object, grown by one latent pixel (the object's outline lives there)
        scale = IMAGE_SIZE // means[-1].shape[-1]
        latent_mask = F.max_pool2d(torch.from_numpy(masks), scale)
        object_masks.append(F.max_pool2d(latent_mask, 3, stride=1, padding=1).to(torch.uint8))
    return torch.cat(means), torch.cat(stds), torch.cat(object_masks)


@torch.no_grad()
def _encode_dataset(vae, config: PretrainConfig, rng: np.random.Generator, log: _Log):
    scenes = [training_scene(rng) for _ in range(config.num_scenes)]
    attributes = torch.tensor([scene_attributes(s) for s in scenes], dtype=torch.long)
    mean, std, object_mask = _encode_scenes(vae, scenes)
    # variance of a posterior sample = variance of the means + mean posterior variance
    total_var = mean.var().item() + std.square().mean().item()
    scaling = 1.0 / math.sqrt(total_var)
    log(f"encoded {len(scenes)} scenes; latent mean {mean.mean().item():+.3f}, std {math.sqrt(total_var):.3f}, "
        f"posterior std {std.mean().item():.3f} -> scaling_factor {scaling:.4f}")
    return mean, std, attributes, scaling, object_mask


@torch.no_grad()
def _encode_videos(vae, config: PretrainConfig, rng: np.random.Generator, log: _Log):
    """The video phase's data: ``config.num_videos`` random training clips of ``config.video_frames`` frames (no
    held-out combination), encoded once. Returns posterior means and stds ``(n, f, 4, h, w)``, attribute indices
    ``(n, 4)`` and latent object masks ``(n, f, 1, h, w)``, as :func:`_encode_dataset` for scenes."""
    from ..toyworld.render import random_clip, scene_at
    from .data import is_held_out

    clips = []
    while len(clips) < config.num_videos:
        clip = random_clip(rng, num_frames=config.video_frames)
        if not is_held_out(clip.colour, clip.shape, clip.background):
            clips.append(clip)
    scenes = [scene_at(clip, frame) for clip in clips for frame in range(config.video_frames)]
    mean, std, mask = _encode_scenes(vae, scenes)
    shape = (len(clips), config.video_frames)
    attributes = torch.tensor([scene_attributes(scene_at(clip, 0)) for clip in clips], dtype=torch.long)
    log(f"encoded {len(clips)} clips of {config.video_frames} frames")
    return (mean.view(*shape, *mean.shape[1:]), std.view(*shape, *std.shape[1:]), attributes,
            mask.view(*shape, *mask.shape[1:]))


def _denoising_loss(unet, latents, context, noise, timesteps, object_mask, noise_scheduler, loss_weight,
                    config: PretrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, per-sample error)`` of one batch: the prediction's squared error (object pixels weighted up by
    ``config.object_loss_weight``), weighted per timestep by ``loss_weight``."""
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(noisy, timesteps, context).sample
    target = noise_scheduler.get_velocity(latents, noise, timesteps) if config.prediction_type == "v_prediction" else noise
    if config.object_loss_weight:
        weight = 1.0 + config.object_loss_weight * object_mask.float()
        error = F.mse_loss(prediction, target, reduction="none").mean(dim=1, keepdim=True)
        per_sample = (weight * error).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3))
    else:
        per_sample = F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))
    return (loss_weight[timesteps] * per_sample).mean(), per_sample


def _monitor(vae, text_encoder, tokenizer, unet, log: _Log, seed: int, snapshot: Path | None, step: int,
             prediction_type: str = "epsilon") -> dict:
    """Quick check: one 20-step sample per held-out combination, read by the detector."""
    from ..toyworld.render import CAPTION_TEMPLATES, fill_template
    from .evaluate import sample_and_detect

    prompts = [fill_template(CAPTION_TEMPLATES[0], colour=c, shape=s, background=b) for c, s, b in HELD_OUT]
    result = sample_and_detect(
        vae, text_encoder, tokenizer, unet, prompts, [dict(colour=c, shape=s, background=b) for c, s, b in HELD_OUT],
        num_inference_steps=20, guidance_scale=7.5, seed=seed, prediction_type=prediction_type,
    )
    log("monitor (held-out, 1 sample each, 20 DDIM steps): "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["accuracy"].items()))
    if snapshot is not None:
        from PIL import Image

        snapshot.mkdir(parents=True, exist_ok=True)
        grid = np.concatenate(list(result["images"]), axis=1)
        Image.fromarray((np.clip(grid, 0, 1) * 255).round().astype(np.uint8)).save(snapshot / f"monitor-{step:05d}.png")
    return result["accuracy"]


# ---------------------------------------------------------------------------------------------- main


def pretrain(
    output_dir: str | Path,
    *,
    seed: int = 0,
    fast: bool = False,
    vae_steps: int | None = None,
    unet_steps: int | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    resume: bool = False,
    **overrides,
) -> dict:
    """Train the toy SD model and write it as a diffusers pipeline folder at ``output_dir``.

    ``fast`` starts from :data:`FAST` instead of :data:`FULL`; ``vae_steps``, ``unet_steps``,
    ``max_minutes`` and any other :class:`PretrainConfig` field given as a keyword override it.
    ``device``: where the networks train ("cuda" takes minutes instead of an hour; the random draws stay on the
    CPU's generator, so the data, noise and timesteps are the same, the arithmetic is not bit-identical).
    Same seed, settings, device and thread count -> the same weights. Returns the run summary that is also
    written to ``output_dir/training.json``.

    ``resume=True`` continues the unfinished run in ``output_dir`` from its last checkpoint with the settings it
    was started with (only :data:`RESUMABLE_CHANGES` may be given again), to the same weights as an
    uninterrupted run.
    """
    output_dir = Path(output_dir)
    state = None
    if resume:
        state = load_checkpoint(output_dir)
        saved = PretrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
        changes = dict(overrides, **{k: v for k, v in (("max_minutes", max_minutes),) if v is not None})
        refused = sorted(k for k, v in changes.items() if k not in RESUMABLE_CHANGES and getattr(saved, k, None) != v)
        if fast or refused or (seed != saved.seed) or (unet_steps not in (None, saved.unet_steps)) or (
                vae_steps not in (None, saved.vae_steps)):
            raise ValueError(f"a resumed run keeps the settings it was started with; "
                             f"it may change only {', '.join(sorted(RESUMABLE_CHANGES))}")
        # a limit that stopped the first part does not carry over: the resumed run goes on to unet_steps unless told
        changes = {"max_minutes": None, "unet_stop_step": None, "video_stop_step": None, **{k: v for k, v in changes.items() if k in RESUMABLE_CHANGES}}
        return _run_pretrain(output_dir, replace(saved, **changes), progress, device, state)
    base = FAST if fast else FULL
    changes = dict(overrides, seed=seed)
    if vae_steps is not None:
        changes["vae_steps"] = vae_steps
    if unet_steps is not None:
        changes["unet_steps"] = unet_steps
    if max_minutes is not None:
        changes["max_minutes"] = max_minutes
    known = {f.name for f in fields(PretrainConfig)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise TypeError(f"unknown pretrain settings: {', '.join(unknown)}")
    config = replace(base, **changes)
    check_config(config)
    if (output_dir / CHECKPOINT_DIR).exists():
        raise FileExistsError(f"{output_dir} holds an unfinished run; continue it with --resume, or choose another --output")
    return _run_pretrain(output_dir, config, progress, device, None)


def check_config(config: PretrainConfig) -> None:
    """``ValueError`` naming the setting, for settings that would otherwise fail only after earlier phases ran."""
    scheduler_config(config.prediction_type)
    if config.unet_time_scale_shift not in ("default", "scale_shift"):
        raise ValueError(f"unet_time_scale_shift must be 'default' or 'scale_shift', not {config.unet_time_scale_shift!r}")
    if config.video_steps and (config.video_frames < 2 or config.unet_batch % config.video_frames):
        raise ValueError(f"video_frames {config.video_frames} must be at least 2 and divide unet_batch {config.unet_batch}")
    if config.video_timestep_jitter < 0:
        raise ValueError(f"video_timestep_jitter must be at least 0 (timesteps), not {config.video_timestep_jitter}")
    if config.video_norm_penalty < 0:
        raise ValueError(f"video_norm_penalty must be at least 0 (a loss weight), not {config.video_norm_penalty}")
    if config.video_norm_offset_penalty < 0:
        raise ValueError("video_norm_offset_penalty must be at least 0 (a loss weight), "
                         f"not {config.video_norm_offset_penalty}")
    if config.video_norm_penalty_max_size < 0:
        raise ValueError("video_norm_penalty_max_size must be at least 0 (latent pixels; 0: every level), "
                         f"not {config.video_norm_penalty_max_size}")
    if config.video_frame_scale_noise < 0:
        raise ValueError(f"video_frame_scale_noise must be at least 0 (a log-scale std), not {config.video_frame_scale_noise}")
    clip_timesteps = tuple(config.video_clip_timesteps)
    if not (len(clip_timesteps) == 2 and all(type(t) is int for t in clip_timesteps)
            and 0 <= clip_timesteps[0] < clip_timesteps[1] <= SD_SCHEDULER["num_train_timesteps"]):
        raise ValueError(f"video_clip_timesteps must be [first, last) with 0 <= first < last <= "
                         f"{SD_SCHEDULER['num_train_timesteps']}, not {list(config.video_clip_timesteps)}")
    if not 0 <= config.video_noise_sharing <= 1:
        raise ValueError(f"video_noise_sharing must be in [0, 1] (a share of the noise variance), not {config.video_noise_sharing}")
    for name, part in (("vae_from", "vae"), ("unet_from", "unet")):
        folder = getattr(config, name)
        if folder and not (Path(folder) / part / "config.json").is_file():
            raise ValueError(f"{name} {folder}: no {part}/config.json there; give a pipeline folder written by pretraining")


def _run_pretrain(output_dir: Path, config: PretrainConfig, progress: bool, device, state: dict | None) -> dict:
    start = time.time() - (state["elapsed_seconds"] if state else 0.0)
    log = _Log(progress, start)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _pretrain(output_dir, config, log, start, torch.device(device), state)
    finally:
        torch.set_num_threads(saved_threads)


def clip_noise(clips: int, frames: int, shape: tuple[int, ...], sharing: float, gen: torch.Generator) -> torch.Tensor:
    """Unit-variance Gaussian noise for ``clips`` clips of ``frames`` frames, ``((clips frames), *shape)``: each clip
    draws a share ``rho`` uniformly in ``[0, sharing]`` and its frames' noise is ``sqrt(rho) * common +
    sqrt(1 - rho) * own``, so two frames of a clip correlate by ``rho`` (``sharing`` 0: independent frames, drawn
    as ``torch.randn`` draws them)."""
    if not 0 <= sharing <= 1:
        raise ValueError(f"the noise share of a clip's frames must be in [0, 1], not {sharing}")
    own = torch.randn((clips * frames, *shape), generator=gen)
    if not sharing:
        return own
    rho = torch.rand(clips, generator=gen) * sharing
    common = torch.randn((clips, *shape), generator=gen)
    expand = (clips, 1) + (1,) * len(shape)
    mixed = rho.sqrt().view(expand) * common[:, None] + (1 - rho).sqrt().view(expand) * own.view(clips, frames, *shape)
    return mixed.flatten(0, 1)


def jitter_timesteps(timesteps: torch.Tensor, jitter: int, num_train_timesteps: int, gen: torch.Generator) -> torch.Tensor:
    """``timesteps`` each moved by an integer drawn uniformly from ``[-jitter, jitter]`` and clamped to
    ``[0, num_train_timesteps)``; ``jitter`` 0 returns them unchanged and draws nothing."""
    if jitter < 0:
        raise ValueError(f"the timestep jitter must be at least 0, not {jitter}")
    if not jitter:
        return timesteps
    moved = timesteps + torch.randint(-jitter, jitter + 1, timesteps.shape, generator=gen)
    return moved.clamp(0, num_train_timesteps - 1)


def frame_spread_penalty(x: torch.Tensor, frames: int, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """The mean of ``log(sigma_f / sigma_pool)^2`` over the videos, frames and groups of a GroupNorm's input ``x``,
    ``((videos frames), c, h, w)``: ``sigma_f`` a frame's own std over its group's values, ``sigma_pool`` the std over
    the group's values in all ``frames`` frames of its video (what Tune-A-Video's pooled GroupNorm divides by);
    ``eps`` (the norm's) is added to both variances. 0 when every frame of a video has the video's std."""
    videos = x.shape[0] // frames
    grouped = x.float().reshape(videos, frames, groups, -1)
    own = grouped.var(dim=-1, unbiased=False) + eps  # (videos, frames, groups)
    pooled = grouped.transpose(1, 2).reshape(videos, groups, -1).var(dim=-1, unbiased=False)[:, None] + eps
    return (0.5 * torch.log(own / pooled)).square().mean()


def frame_offset_penalty(x: torch.Tensor, frames: int, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """The mean of ``((mu_f - mu_pool) / sigma_pool)^2`` over the videos, frames and groups of a GroupNorm's input
    ``x``, ``((videos frames), c, h, w)``: ``mu_f`` a frame's own mean over its group's values, ``mu_pool`` and
    ``sigma_pool`` the mean and std over the group's values in all ``frames`` frames of its video (what Tune-A-Video's
    pooled GroupNorm subtracts and divides by; ``eps``, the norm's, added to the variance). 0 when every frame of a
    video has the video's mean."""
    videos = x.shape[0] // frames
    grouped = x.float().reshape(videos, frames, groups, -1)
    pooled = grouped.transpose(1, 2).reshape(videos, groups, -1)
    offset = grouped.mean(dim=-1) - pooled.mean(dim=-1)[:, None]  # (videos, frames, groups)
    return (offset.square() / (pooled.var(dim=-1, unbiased=False)[:, None] + eps)).mean()


def _train_video(vae, unet_weights, context_of, config: PretrainConfig, log: _Log, start: float, device: torch.device,
                 state: dict | None, checkpoint) -> tuple[torch.nn.Module, dict]:
    """The video phase: train a copy of ``unet_weights`` (the UNet phase's EMA weights) with the ResNet GroupNorm
    statistics pooled over the frames of each rendered clip, as Tune-A-Video's inflated UNet pools them over a video's
    frames. A step is a batch of ``unet_batch // video_frames`` clips (one caption and one timestep per clip, moved
    per frame by up to ``video_timestep_jitter``; noise per frame, partly shared by a clip's frames with
    ``video_noise_sharing``; offset noise per clip) or, with probability ``video_image_share``, ``unet_batch`` single
    frames of random clips (``video_pool_statistics`` off: the clip steps, too, normalise each frame by itself); the
    loss is the UNet phase's. Random streams of its own (so ``unet_from`` gives the full run's
    weights). ``state``: the phase's part of a checkpoint to resume from; ``checkpoint(video_state)`` writes one.
    Returns the EMA UNet (norms per sample again) and the phase's summary."""
    import copy

    from diffusers import DDPMScheduler

    from ..models.unet import pool_norms_over_frames

    frames = config.video_frames  # checked by check_config: divides unet_batch
    rng = np.random.default_rng([config.seed, 2])
    gen = torch.Generator().manual_seed(config.seed + 2_000_003)
    t0 = time.time()
    mean, std, attributes, object_mask = _encode_videos(vae, config, rng, log)
    scaling = vae.config.scaling_factor
    noise_scheduler = DDPMScheduler(**{k: v for k, v in scheduler_config(config.prediction_type).items()
                                       if k not in ("skip_prk_steps", "set_alpha_to_one")})
    loss_weight = loss_weights(noise_scheduler.alphas_cumprod, config).to(device)
    unet = copy.deepcopy(unet_weights).train().requires_grad_(True)
    norms = pool_norms_over_frames(unet)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    spreads: list[torch.Tensor] = []  # frame_spread_penalty of each pooled norm's input in a clip step
    offsets: list[torch.Tensor] = []  # frame_offset_penalty of the same
    penalised = bool(config.video_norm_penalty or config.video_norm_offset_penalty)
    if penalised:
        def record_spread(norm, inputs, output) -> None:
            if norm.num_frames > 1 and inputs[0].shape[-1] <= (config.video_norm_penalty_max_size or inputs[0].shape[-1]):
                if config.video_norm_penalty:
                    spreads.append(frame_spread_penalty(inputs[0], norm.num_frames, norm.num_groups, norm.eps))
                if config.video_norm_offset_penalty:
                    offsets.append(frame_offset_penalty(inputs[0], norm.num_frames, norm.num_groups, norm.eps))

        hooks = [norm.register_forward_hook(record_spread) for norm in norms]
    scale_gen = torch.Generator().manual_seed(config.seed + 3_000_003)  # video_frame_scale_noise's own stream
    if config.video_frame_scale_noise:
        def scale_frames(norm, inputs):
            if norm.num_frames == 1:  # per-frame statistics would undo the scale
                return None
            x = inputs[0]
            factor = torch.exp(config.video_frame_scale_noise * torch.randn(x.shape[0], norm.num_groups, 1, generator=scale_gen))
            return (x.reshape(x.shape[0], norm.num_groups, -1) * factor.to(x)).reshape(x.shape),

        scale_hooks = [norm.register_forward_pre_hook(scale_frames) for norm in norms]
    spread_history: list[float] = []
    offset_history: list[float] = []
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.video_lr, weight_decay=config.weight_decay)
    history: list[float] = []
    steps_done, seconds_before = 0, 0.0
    if state is not None:
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        rng.bit_generator.state = state["numpy_rng"]
        if "scale_generator" in state:
            scale_gen.set_state(state["scale_generator"])
        history, steps_done, seconds_before = list(state["history"]), state["steps_done"], state["seconds"]
        spread_history = list(state.get("spread_history", []))
        offset_history = list(state.get("offset_history", []))
        log(f"resuming the video phase at step {steps_done}/{config.video_steps}")
    t0 -= seconds_before
    clips, batch = mean.shape[0], config.unet_batch
    for step in range(steps_done, config.video_steps):
        if config.video_stop_step is not None and step >= config.video_stop_step:
            break
        for group in optimizer.param_groups:
            group["lr"] = config.video_lr * _lr_factor(step, config.video_steps, 20, 0.1, 0.5)
        if rng.random() < config.video_image_share:  # single frames: statistics per frame
            clip = torch.randint(clips, (batch,), generator=gen)
            frame = torch.randint(frames, (batch,), generator=gen)
            mu, sigma, mask = mean[clip, frame], std[clip, frame], object_mask[clip, frame]
            captions = [random_caption(attributes[i].tolist(), rng, config.clip_caption_probability, config.caption_dropout)
                        for i in clip]
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=gen)
            offset = torch.randn(batch, mu.shape[1], 1, 1, generator=gen)
            pooled = 1
        else:  # whole clips: statistics pooled over each clip's frames
            count = batch // frames
            clip = torch.randint(clips, (count,), generator=gen)
            mu, sigma, mask = mean[clip].flatten(0, 1), std[clip].flatten(0, 1), object_mask[clip].flatten(0, 1)  # ((n f), ...)
            captions = [caption for i in clip for caption in [random_caption(
                attributes[i].tolist(), rng, config.video_caption_probability, config.caption_dropout)] * frames]
            timesteps = torch.randint(*config.video_clip_timesteps, (count,), generator=gen)
            timesteps = jitter_timesteps(timesteps.repeat_interleave(frames), config.video_timestep_jitter,
                                         noise_scheduler.config.num_train_timesteps, gen)
            offset = torch.randn(count, mu.shape[1], 1, 1, generator=gen).repeat_interleave(frames, dim=0)
            pooled = frames
        for norm in norms:
            norm.num_frames = pooled if config.video_pool_statistics else 1
        latents = ((mu + sigma * torch.randn(mu.shape, generator=gen)) * scaling).to(device)
        sharing = config.video_noise_sharing if pooled > 1 else 0.0
        noise = (clip_noise(latents.shape[0] // pooled, pooled, tuple(latents.shape[1:]), sharing, gen)
                 + config.offset_noise * offset).to(device)
        spreads.clear()
        offsets.clear()
        loss, per_sample = _denoising_loss(unet, latents, context_of(captions), noise, timesteps.to(device),
                                           mask.to(device), noise_scheduler, loss_weight, config)
        if spreads:
            spread = torch.stack(spreads).mean()
            loss = loss + config.video_norm_penalty * spread
            spread_history.append(spread.item())
        if offsets:
            offset_term = torch.stack(offsets).mean()
            loss = loss + config.video_norm_offset_penalty * offset_term
            offset_history.append(offset_term.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), config.max_grad_norm)
        optimizer.step()
        _ema_update(ema, unet, min(config.video_ema_decay, (1 + step) / (10 + step)))
        history.append(per_sample.mean().item())
        steps_done = step + 1
        if config.log_every and (steps_done % config.log_every == 0 or steps_done == config.video_steps):
            spread_note = f"  spread {np.mean(spread_history[-config.log_every:]):.4f}" if spread_history else ""
            spread_note += f"  offset {np.mean(offset_history[-config.log_every:]):.4f}" if offset_history else ""
            log(f"video step {steps_done}/{config.video_steps}  mse {np.mean(history[-config.log_every:]):.4f}{spread_note}  "
                f"lr {optimizer.param_groups[0]['lr']:.2e}  {(time.time() - t0) / steps_done:.2f} s/step")
        if checkpoint is not None and steps_done % config.checkpoint_every == 0 and steps_done < config.video_steps:
            checkpoint({"unet": unet.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                        "generator": gen.get_state(), "scale_generator": scale_gen.get_state(),
                        "numpy_rng": rng.bit_generator.state, "history": history,
                        "spread_history": spread_history, "offset_history": offset_history, "steps_done": steps_done, "seconds": time.time() - t0})
    if penalised:
        for hook in hooks:
            hook.remove()
    if config.video_frame_scale_noise:
        for hook in scale_hooks:
            hook.remove()
    for module in ema.modules():  # the saved model normalises each image by itself
        if hasattr(module, "num_frames"):
            module.num_frames = 1
    summary = {"steps_done": steps_done, "seconds": time.time() - t0,
               "final_mse": float(np.mean(history[-max(1, len(history) // 10):])) if history else None,
               # frame_spread_penalty over the last tenth of the clip steps (with video_norm_penalty)
               "final_spread": float(np.mean(spread_history[-max(1, len(spread_history) // 10):])) if spread_history else None,
               # frame_offset_penalty over the last tenth of the clip steps (with video_norm_offset_penalty)
               "final_offset": float(np.mean(offset_history[-max(1, len(offset_history) // 10):])) if offset_history else None}
    return ema, summary


def load_checkpoint(output_dir: str | Path) -> dict:
    """The resumable state an unfinished run left in ``output_dir`` (``ValueError`` if there is none)."""
    path = Path(output_dir) / CHECKPOINT_DIR / "state.pt"
    if not path.is_file():
        raise ValueError(f"{output_dir} holds no unfinished run to resume (no {CHECKPOINT_DIR}/state.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or not a checkpoint: torch raises several types
        raise ValueError(f"{path} is damaged ({str(error).splitlines()[0][:120]}); delete {output_dir} and train again") from None
    if not isinstance(state, dict) or set(state.get("config", {})) - {f.name for f in fields(PretrainConfig)}:
        raise ValueError(f"{path} was not written by this version's pretraining; delete {output_dir} and train again")
    return state


def _save_checkpoint(output_dir: Path, state: dict) -> None:
    """Write the resumable state atomically (a crash while writing leaves the previous one)."""
    from ..runfolder import atomic_write

    folder = output_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "state.pt", lambda tmp: torch.save(state, tmp))


def _pretrain(output_dir: Path, config: PretrainConfig, log: _Log, start: float, device: torch.device,
              state: dict | None) -> dict:
    import copy
    import shutil
    import tempfile

    from diffusers import DDPMScheduler

    if state is not None:
        log(f"resuming {output_dir} at UNet step {state['steps_done']}/{config.unet_steps}")
    log(f"pretrain -> {output_dir}  ({json.dumps(asdict(config))})")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = save_tokenizer_files(Path(tmp) / "tokenizer", model_max_length=MODEL_MAX_LENGTH)
        tokenizer = load_tokenizer(tokenizer_dir)
        vae, text_encoder, unet = (m.to(device) for m in build_models(config, tokenizer))
        sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in
                 (("vae", vae), ("text_encoder", text_encoder), ("unet", unet))}
        log("parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in sizes.items()))

        # 1. VAE
        if state is not None:  # the trained VAE is part of the checkpoint
            vae.load_state_dict(state["vae"])
            vae_summary = state["vae_summary"]
            log("VAE taken from the checkpoint")
        else:
            if config.vae_from:
                from diffusers import AutoencoderKL

                vae = AutoencoderKL.from_pretrained(Path(config.vae_from) / "vae", local_files_only=True).float().to(device)
                log(f"VAE taken from {config.vae_from}")
            vae_summary = _train_vae(vae, config, rng, gen, log)
        vae.eval()
        vae.requires_grad_(False)
        # the later phases draw from streams of their own, so that a run that takes its VAE from an earlier run of
        # the same seed (vae_from, vae_steps=0) draws exactly the scenes, captions and noise the full run draws
        rng = np.random.default_rng([config.seed, 1])
        gen = torch.Generator().manual_seed(config.seed + 1_000_003)

        # 2. latent cache
        t0 = time.time()
        mean, std, attributes, scaling, object_mask = _encode_dataset(vae, config, rng, log)
        vae.register_to_config(scaling_factor=scaling)
        cache_seconds = time.time() - t0

        # 3. UNet + text encoder
        noise_scheduler = DDPMScheduler(**{k: v for k, v in scheduler_config(config.prediction_type).items()
                                           if k not in ("skip_prk_steps", "set_alpha_to_one")})
        loss_weight = loss_weights(noise_scheduler.alphas_cumprod, config).to(device)

        unet.train()
        ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
        if config.train_text_encoder:
            text_encoder.train()
            ema_text = copy.deepcopy(text_encoder).eval().requires_grad_(False)
        else:  # frozen, as Stable Diffusion's CLIP text encoder is
            text_encoder.eval().requires_grad_(False)
            ema_text = text_encoder
        params = list(unet.parameters()) + (list(text_encoder.parameters()) if config.train_text_encoder else [])
        caption_ids, frozen_states = _caption_caches(tokenizer, text_encoder, device)
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        history: list[float] = []
        monitors: list[dict] = []
        steps_done = 0
        monitor_seconds = unet_seconds_before = 0.0
        if state is not None:  # the latent cache above is rebuilt exactly; everything the steps change is restored
            unet.load_state_dict(state["unet"])
            ema_unet.load_state_dict(state["ema_unet"])
            if config.train_text_encoder:
                text_encoder.load_state_dict(state["text_encoder"])
                ema_text.load_state_dict(state["ema_text"])
            optimizer.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            rng.bit_generator.state = state["numpy_rng"]
            history, monitors = list(state["history"]), list(state["monitors"])
            steps_done, monitor_seconds, unet_seconds_before = state["steps_done"], state["monitor_seconds"], state["unet_seconds"]
        elif config.unet_from:  # the UNet phase is skipped: the video phase starts from an earlier run's UNet
            from diffusers import UNet2DConditionModel

            earlier = UNet2DConditionModel.from_pretrained(Path(config.unet_from) / "unet", local_files_only=True)
            ema_unet.load_state_dict(earlier.float().state_dict())  # strict: the same architecture, every key
            unet.load_state_dict(ema_unet.state_dict())
            log(f"UNet taken from {config.unet_from}")

        def checkpoint(video: dict | None = None) -> None:
            _save_checkpoint(output_dir, {
                "config": asdict(config), "steps_done": steps_done, "vae": vae.state_dict(), "vae_summary": vae_summary,
                "unet": unet.state_dict(), "ema_unet": ema_unet.state_dict(), "optimizer": optimizer.state_dict(),
                **({"text_encoder": text_encoder.state_dict(), "ema_text": ema_text.state_dict()}
                   if config.train_text_encoder else {}),
                "generator": gen.get_state(), "numpy_rng": rng.bit_generator.state, "history": history,
                "monitors": monitors, "monitor_seconds": monitor_seconds, "unet_seconds": unet_seconds,
                "elapsed_seconds": time.time() - start, **({"video": video} if video is not None else {}),
            })

        t0 = time.time() - unet_seconds_before
        stopped_early = False
        n = mean.shape[0]
        for step in range(steps_done, 0 if config.unet_from else config.unet_steps):
            if config.unet_stop_step is not None and step >= config.unet_stop_step:
                break
            if config.max_minutes is not None and (time.time() - start) / 60 > config.max_minutes:
                stopped_early = True
                log(f"time budget of {config.max_minutes} min reached after {step} UNet steps; stopping")
                break
            for group in optimizer.param_groups:
                group["lr"] = config.lr * _lr_factor(
                step, config.unet_steps, config.warmup_steps, config.final_lr_fraction, config.decay_fraction)
            index = torch.randint(n, (config.unet_batch,), generator=gen)
            latents = ((mean[index] + std[index] * torch.randn(mean[index].shape, generator=gen)) * scaling).to(device)
            captions = [random_caption(attributes[i].tolist(), rng, config.clip_caption_probability, config.caption_dropout)
                        for i in index]
            if config.train_text_encoder:
                context = text_encoder(caption_ids(captions).to(device))[0]
            else:  # a frozen encoder's states depend on the caption alone: computed once per caption
                context = frozen_states(captions)
            noise = torch.randn(latents.shape, generator=gen)
            if config.offset_noise:
                noise = noise + config.offset_noise * torch.randn(latents.shape[:2] + (1, 1), generator=gen)
            noise = noise.to(device)
            timesteps = draw_timesteps(config, noise_scheduler.config.num_train_timesteps, gen).to(device)
            loss, per_sample = _denoising_loss(unet, latents, context, noise, timesteps, object_mask[index].to(device),
                                               noise_scheduler, loss_weight, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            _ema_update(ema_unet, unet, decay)
            if config.train_text_encoder:
                _ema_update(ema_text, text_encoder, decay)
            history.append(per_sample.mean().item())
            steps_done = step + 1
            if config.log_every and (steps_done % config.log_every == 0 or steps_done == config.unet_steps):
                rate = (time.time() - t0 - monitor_seconds) / steps_done
                log(f"unet step {steps_done}/{config.unet_steps}  mse {np.mean(history[-config.log_every:]):.4f}  "
                    f"lr {optimizer.param_groups[0]['lr']:.2e}  {rate:.2f} s/step")
            if config.monitor_every and steps_done % config.monitor_every == 0 and steps_done < config.unet_steps:
                m0 = time.time()
                snapshot = Path(config.snapshot_dir) if config.snapshot_dir else None
                monitors.append({"step": steps_done, **_monitor(vae, ema_text, tokenizer, ema_unet, log, config.seed,
                                                                snapshot, steps_done, config.prediction_type)})
                if snapshot is not None:
                    save_pipeline(snapshot / "pipeline", vae, ema_text, tokenizer_dir, ema_unet, config)
                monitor_seconds += time.time() - m0
            if config.checkpoint_every and steps_done % config.checkpoint_every == 0 and steps_done < config.unet_steps:
                unet_seconds = time.time() - t0
                checkpoint()
        unet_seconds = time.time() - t0

        # 4. video phase
        saved_unet, video_summary = ema_unet, None
        unet_complete = bool(config.unet_from) or steps_done == config.unet_steps
        if config.video_steps and unet_complete and not stopped_early:
            if config.checkpoint_every and (state is None or "video" not in state):
                checkpoint()  # the UNet phase is done: an interrupted video phase starts again from here
            context_of = _caption_caches(tokenizer, ema_text, device)[1]
            saved_unet, video_summary = _train_video(vae, ema_unet, context_of, config, log, start, device,
                                                     state.get("video") if state else None,
                                                     checkpoint if config.checkpoint_every else None)
        complete = unet_complete and (not config.video_steps or (video_summary or {}).get("steps_done") == config.video_steps)

        summary = {
            "config": asdict(config),
            "parameters": sizes,
            "vae": vae_summary,
            "scaling_factor": scaling,
            "latent_cache_seconds": cache_seconds,
            "unet_steps_done": steps_done,
            "unet_stopped_early": stopped_early,
            "unet_seconds": unet_seconds,
            "video": video_summary,
            "monitor_seconds": monitor_seconds,
            "final_mse": float(np.mean(history[-max(1, len(history) // 10) :])) if history else None,
            "monitor": monitors,
            "held_out": [list(t) for t in HELD_OUT],
            "threads": config.threads,
            "device": str(device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            # the CPU kernels torch chose (AVX2, AVX512, ...): other kernels round otherwise, and give other weights
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
        save_pipeline(output_dir, vae, ema_text, tokenizer_dir, saved_unet, config)
        if complete:  # nothing left to resume
            shutil.rmtree(output_dir / CHECKPOINT_DIR, ignore_errors=True)
        summary["total_seconds"] = time.time() - start
        summary["weights_bytes"] = sum(p.stat().st_size for p in output_dir.rglob("*.safetensors"))
        (output_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        log(f"done in {summary['total_seconds'] / 60:.1f} min; weights {summary['weights_bytes'] / 1e6:.1f} MB -> {output_dir}")
        return summary


def parse_settings(items: list[str]) -> dict:
    """``["name=value", ...]`` -> PretrainConfig overrides: values are JSON (lists become tuples where the field's
    default is a tuple), or plain strings when they are not JSON."""
    defaults = {f.name: getattr(FULL, f.name) for f in fields(PretrainConfig)}
    settings = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: write NAME=VALUE, e.g. --set high_noise_share=0.5")
        if name not in defaults:
            raise ValueError(f"--set {name}: not a PretrainConfig field; see tuneavideo.toymodel.pretrain.PretrainConfig")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            raise ValueError(f"--set {name}={text}: a finite number is needed, not NaN or Infinity")
        default = defaults[name]
        if isinstance(value, list) and isinstance(default, tuple):
            value = tuple(value)
        expected = float if type(default) is float else type(default)
        # null only where the field may be unset (its default is None); a bool is not a number here
        if default is not None and (value is None or expected is not bool and isinstance(value, bool) or not (
                isinstance(value, expected) or (expected is float and type(value) is int))):
            raise ValueError(f"--set {name}={text}: expected a {expected.__name__} like {json.dumps(default)}")
        settings[name] = value
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneavideo.toymodel.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", "-o", required=True, help="the pipeline folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="a few minutes instead of about an hour (smoke-test quality)")
    parser.add_argument("--vae-steps", type=int)
    parser.add_argument("--unet-steps", type=int)
    parser.add_argument("--max-minutes", type=float, help="stop the UNet phase once the run has taken this long")
    parser.add_argument("--unet-stop-step", type=int, help="stop the UNet phase after this many steps (the schedule still spans --unet-steps)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (default) or cuda")
    parser.add_argument("--snapshot-dir", help="write the monitor's sample grids and the current pipeline here")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                        help="any other PretrainConfig field, e.g. --set unet_time_scale_shift=scale_shift "
                             "--set unet_channels=[32,64,128] (JSON values; repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the unfinished run in --output from its last checkpoint, with its own settings "
                             f"(--set may change only {', '.join(sorted(RESUMABLE_CHANGES))})")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        settings = parse_settings(args.settings)
        if not args.resume:
            check_config(replace(FAST if args.fast else FULL, **settings))
    except ValueError as error:
        parser.error(str(error))
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device!r} is not a torch device; use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch here; use --device cpu")
    extra = dict(settings, **({"threads": args.threads} if args.threads else {}))
    if args.unet_stop_step is not None:
        extra["unet_stop_step"] = args.unet_stop_step
    if args.snapshot_dir:
        extra["snapshot_dir"] = args.snapshot_dir
    if args.resume:
        fixed = sorted(name for name in settings if name not in RESUMABLE_CHANGES)
        given = [flag for flag, value in (("--fast", args.fast), ("--vae-steps", args.vae_steps), ("--unet-steps",
                 args.unet_steps), ("--threads", args.threads)) if value] + [f"--set {name}" for name in fixed]
        if given or args.seed != 0:
            parser.error(f"--resume continues a run with the settings it was started with; drop {', '.join(given) or '--seed'} "
                         f"(a resumed run may change only {', '.join(sorted(RESUMABLE_CHANGES))})")
        try:
            seed = load_checkpoint(args.output)["config"]["seed"]
        except ValueError as error:
            parser.error(str(error))
        pretrain(args.output, seed=seed, resume=True, max_minutes=args.max_minutes, progress=not args.quiet,
                 device=args.device, **extra)
        return 0
    if (Path(args.output) / CHECKPOINT_DIR).exists():
        parser.error(f"{args.output} holds an unfinished run: continue it with --resume, or choose another --output")
    pretrain(args.output, seed=args.seed, fast=args.fast, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
             max_minutes=args.max_minutes, progress=not args.quiet, device=args.device, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
