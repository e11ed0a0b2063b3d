"""Text-to-video sampling with an inflated (and usually tuned) UNet. Sampling only: tuning lives in
:mod:`tuneavideo.tuning`, inversion in :mod:`tuneavideo.inversion`.

Layouts: pixel videos are ``(f, 3, h, w)`` frames in ``[0, 1]`` (batches ``(b, f, 3, h, w)``);
latents are ``(b, c, f, h / 8, w / 8)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline
from transformers import CLIPTextModel, CLIPTokenizer

from .models import TuneAVideoUNet
from .windows import FrameWindows, WindowedUNet

if TYPE_CHECKING:
    from .control import AttentionController

logger = logging.getLogger(__name__)


class TuneAVideoPipeline(DiffusionPipeline):
    """DDIM sampling with classifier-free guidance, from given (inverted) or random latents."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: TuneAVideoUNet,
        scheduler: DDIMScheduler,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_chunk = 8  # frames per VAE call: decoding 24 frames of 512x512 at once needs ~20 GB

    @property
    def latent_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """CLIP text embeddings ``(n, 77, d)`` of SD's conditioning (last hidden state); a prompt longer than the
        tokenizer's limit is cut there, with a warning. Each distinct prompt is encoded once, so equal prompts get
        equal rows exactly (batched attention kernels need not give equal rows of one batch equal results)."""
        limit = self.tokenizer.model_max_length
        distinct = list(dict.fromkeys(prompts))
        for prompt in distinct:
            length = len(self.tokenizer(prompt, verbose=False).input_ids)  # with the start and end tokens
            if length > limit:
                logger.warning(f"warning: the prompt '{prompt[:40]}...' has {length} tokens; the text encoder reads the "
                               f"first {limit} and ignores the rest: shorten it")
        ids = self.tokenizer(
            distinct, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        states = self.text_encoder(ids.to(self.text_encoder.device))[0]  # (distinct, 77, d)
        row = {prompt: i for i, prompt in enumerate(distinct)}
        return states[[row[prompt] for prompt in prompts]]

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE posterior of ``(f, 3, h, w)`` frames in [0, 1]: ``(mean, std)``, each ``(1, c, f, h/8, w/8)``,
        already multiplied by the VAE's scaling factor."""
        vae = self.vae
        pixels = (frames * 2 - 1).to(device=vae.device, dtype=vae.dtype)
        means, stds = [], []
        for chunk in pixels.split(self.vae_chunk):
            posterior = vae.encode(chunk).latent_dist
            means.append(posterior.mean.float())
            stds.append(posterior.std.float())
        scale = vae.config.scaling_factor
        mean = torch.cat(means).transpose(0, 1).unsqueeze(0) * scale  # (1, c, f, h, w)
        std = torch.cat(stds).transpose(0, 1).unsqueeze(0) * scale
        return mean, std

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``(b, c, f, h, w)`` latents to ``(b, f, 3, H, W)`` frames in [0, 1]."""
        vae = self.vae
        batch, channels, frames, height, width = latents.shape
        flat = latents.transpose(1, 2).reshape(batch * frames, channels, height, width) / vae.config.scaling_factor
        images = [vae.decode(chunk.to(vae.dtype)).sample.float() for chunk in flat.split(self.vae_chunk)]
        video = torch.cat(images).view(batch, frames, 3, height * self.latent_scale, width * self.latent_scale)
        return ((video + 1) / 2).clamp(0, 1).cpu()

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_frames: int,
        height: int = 512,
        width: int = 512,
        num_inference_steps: int = 50,
        guidance_scale: float = 12.5,
        negative_prompt: str = "",
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        callback: Callable[[int, int], None] | None = None,
        output_type: str = "video",
        uncond_embeddings: torch.Tensor | None = None,
        controller: AttentionController | None = None,
        windows: FrameWindows | None = None,
    ) -> torch.Tensor:
        """Sample videos for ``prompt``.

        Args:
            latents: initial noise ``(1 or b, c, f, h/8, w/8)``, e.g. from :func:`~tuneavideo.inversion.ddim_invert`;
                random from ``generator`` when ``None``.
            guidance_scale: classifier-free guidance for a scale above 1; 1 or less disables it (one UNet call per step).
            negative_prompt: the unconditional prompt ("" by default, as in the reference).
            output_type: ``"video"`` for ``(b, f, 3, height, width)`` frames in [0, 1], ``"latent"`` for latents.
            uncond_embeddings: the unconditional embeddings in place of ``negative_prompt``'s, ``(b, l, d)``, or
                ``(steps, b, l, d)`` for one per step (null-text inversion); one row per prompt.
            controller: attention control (:class:`~tuneavideo.control.AttentionController`): its processors are set
                on the UNet for this call only; it is told each step and may blend the latents after it.
            windows: run the UNet on windows of frames (:mod:`tuneavideo.windows`) at every step, for videos longer
                than the tuned clip; ``None`` (or a window at least ``num_frames`` long): the whole video at once.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("no prompt given; pass at least one prompt")
        batch = len(prompts)
        device = self.unet.device
        dtype = self.unet.dtype
        shape = (batch, self.unet.config.in_channels, num_frames, height // self.latent_scale, width // self.latent_scale)
        if latents is None:
            latents = torch.randn(shape, generator=generator, device=generator.device if generator else "cpu")
        if latents.shape[1:] != shape[1:]:
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape}; invert a video of that size")
        latents = latents.to(device=device, dtype=torch.float32).expand(batch, -1, -1, -1, -1) * self.scheduler.init_noise_sigma

        # Classifier-free guidance only for a scale above 1, as the reference (and diffusers' Stable Diffusion
        # pipelines) decide it: a scale of 1 or less samples the prompt alone, one UNet call per step. (A scale
        # below 1 would otherwise pull toward the unconditional prompt, which neither offers.)
        guided = guidance_scale > 1.0
        if uncond_embeddings is None or not guided:
            context = self.encode_prompt(([negative_prompt] * batch if guided else []) + prompts).to(dtype)
        else:
            cond = self.encode_prompt(prompts).to(dtype)
            if uncond_embeddings.ndim == 3:
                uncond_embeddings = uncond_embeddings[None].expand(num_inference_steps, -1, -1, -1)
            if uncond_embeddings.shape[:2] != (num_inference_steps, batch) or uncond_embeddings.shape[2:] != cond.shape[1:]:
                raise ValueError(f"uncond_embeddings have shape {tuple(uncond_embeddings.shape)}; expected "
                                 f"({num_inference_steps}, {batch}, {cond.shape[1]}, {cond.shape[2]}): one per step and prompt")

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        unet = WindowedUNet(self.unet, windows, on_window=controller.begin_window if controller is not None else None)
        with controller.attached(self.unet) if controller is not None else nullcontext():
            for i, t in enumerate(timesteps):
                if uncond_embeddings is not None and guided:
                    context = torch.cat([uncond_embeddings[i].to(device=device, dtype=dtype), cond])
                if controller is not None:
                    controller.begin_step(i)
                model_input = torch.cat([latents, latents]) if guided else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                output = unet(model_input.to(dtype), t, context).sample.float()
                if guided:
                    uncond, cond_output = output.chunk(2)
                    output = uncond + guidance_scale * (cond_output - uncond)
                latents = self.scheduler.step(output, t, latents, eta=eta, generator=generator).prev_sample
                if controller is not None:
                    latents = controller.after_step(latents)
                if callback is not None:
                    callback(i + 1, len(timesteps))
        if output_type == "latent":
            return latents
        return self.decode_latents(latents)
