"""DDIM inversion of video latents (Tune-A-Video section 3.4; Song et al. 2021, eq. 12 run backwards)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler

from .models import TuneAVideoUNet


def epsilon_from_output(output: torch.Tensor, sample: torch.Tensor, alpha_t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The noise estimate behind a model output: epsilon as is, or from v = sqrt(a) eps - sqrt(1-a) x0."""
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return alpha_t.sqrt() * output + (1 - alpha_t).sqrt() * sample
    raise ValueError(f"prediction_type {prediction_type!r} is not supported; use epsilon or v_prediction")


@torch.no_grad()
def ddim_invert(
    unet: TuneAVideoUNet,
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    context: torch.Tensor,
    num_steps: int = 50,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Map clean latents ``(b, c, f, h, w)`` to the DDIM noise they come from.

    Runs the sampling timesteps in increasing order ``t = 1, 21, ..., 981`` (for 50 steps of SD's
    1000). Each step goes from ``x`` at ``t_prev = t - 1000 / steps`` (``alpha_prev`` is
    ``final_alpha_cumprod``, i.e. ``alphas_cumprod[0]`` for SD, when ``t_prev < 0``) to ``t``, with
    ``eps = unet(x, t, context)`` and no guidance::

        x0  = (x - sqrt(1 - a_prev) * eps) / sqrt(a_prev)
        x_t = sqrt(a_t) * x0 + sqrt(1 - a_t) * eps

    ``context`` is the empty prompt's embedding in Tune-A-Video. The math runs in float32 whatever
    the UNet's dtype. Returns the latents at the last timestep: the initial noise for sampling.
    """
    scheduler.set_timesteps(num_steps, device=latents.device)
    timesteps = scheduler.timesteps.flip(0)  # increasing: 1, 21, ..., 981
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod.to(device=latents.device, dtype=torch.float32)
    final_alpha = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32, device=latents.device)
    prediction_type = scheduler.config.prediction_type
    dtype = next(unet.parameters()).dtype

    x = latents.float()
    for i, t in enumerate(timesteps):
        t_prev = int(t) - stride
        a_prev = alphas[t_prev] if t_prev >= 0 else final_alpha
        a_t = alphas[int(t)]
        output = unet(x.to(dtype), t, context.to(dtype)).sample.float()
        eps = epsilon_from_output(output, x, a_t, prediction_type)  # the model was told t
        x0 = (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
        x = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x
