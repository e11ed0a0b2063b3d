"""Inversion of video latents: DDIM inversion (Tune-A-Video section 3.4; Song et al. 2021, eq. 12 run backwards),
and the null-text optimisation that makes guided sampling retrace it (Mokady et al., "Null-text Inversion for
Editing Real Images using Guided Diffusion Models", CVPR 2023)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler

from .models import TuneAVideoUNet
from .windows import FrameWindows, WindowedUNet


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
    return_trajectory: bool = False,
    windows: FrameWindows | None = None,
    on_window: Callable[[int, range], None] | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Map clean latents ``(b, c, f, h, w)`` to the DDIM noise they come from.

    Runs the sampling timesteps in increasing order ``t = 1, 21, ..., 981`` (for 50 steps of SD's
    1000). Each step goes from ``x`` at ``t_prev = t - 1000 / steps`` (``alpha_prev`` is
    ``final_alpha_cumprod``, i.e. ``alphas_cumprod[0]`` for SD, when ``t_prev < 0``) to ``t``, with
    ``eps = unet(x, t, context)`` and no guidance::

        x0  = (x - sqrt(1 - a_prev) * eps) / sqrt(a_prev)
        x_t = sqrt(a_t) * x0 + sqrt(1 - a_t) * eps

    ``context`` is the empty prompt's embedding in Tune-A-Video. The math runs in float32 whatever
    the UNet's dtype. Returns the latents at the last timestep: the initial noise for sampling; with
    ``return_trajectory``, every latent on the way instead, ``[x_0 (the input), x_1, ..., x_T]`` (``num_steps + 1``
    tensors, the last one the usual result), as null-text inversion needs. ``windows``: the UNet runs on windows of
    frames at every step (:class:`~tuneavideo.windows.WindowedUNet`, which tells ``on_window`` each window).
    """
    scheduler.set_timesteps(num_steps, device=latents.device)
    timesteps = scheduler.timesteps.flip(0)  # increasing: 1, 21, ..., 981
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod.to(device=latents.device, dtype=torch.float32)
    final_alpha = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32, device=latents.device)
    prediction_type = scheduler.config.prediction_type
    dtype = next(unet.parameters()).dtype
    model = WindowedUNet(unet, windows, on_window)

    x = latents.float()
    trajectory = [x]
    for i, t in enumerate(timesteps):
        t_prev = int(t) - stride
        a_prev = alphas[t_prev] if t_prev >= 0 else final_alpha
        a_t = alphas[int(t)]
        output = model(x.to(dtype), t, context.to(dtype)).sample.float()
        eps = epsilon_from_output(output, x, a_t, prediction_type)  # the model was told t
        x0 = (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
        x = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
        trajectory.append(x)
        if callback is not None:
            callback(i + 1, len(timesteps))
    return trajectory if return_trajectory else x


def null_text_optimise(
    unet: TuneAVideoUNet,
    scheduler: DDIMScheduler,
    trajectory: list[torch.Tensor],
    context: torch.Tensor,
    uncond: torch.Tensor,
    guidance_scale: float,
    inner_steps: int = 10,
    learning_rate: float = 1e-2,
    epsilon: float = 1e-5,
    callback: Callable[[int, int], None] | None = None,
    windows: FrameWindows | None = None,
) -> torch.Tensor:
    """Null-text inversion (Mokady et al. 2023, algorithm 1): one unconditional embedding per sampling step such
    that guided DDIM sampling with ``context`` (the source prompt) from ``trajectory[-1]`` retraces ``trajectory``
    (from :func:`ddim_invert` with ``return_trajectory``, inverted with the same prompt).

    At sampling step ``i`` (timesteps in sampling order), starting from the latent the previous steps reached,
    the embedding (initialised from the previous step's, the first from ``uncond``, the plain empty prompt's) is
    optimised with Adam to minimise ``|| z_{t-1} - DDIM-step(z_t, eps_uncond + w (eps_cond - eps_uncond)) ||^2``
    against ``trajectory[T - i - 1]``: at most ``inner_steps`` iterations at a learning rate of
    ``learning_rate * (1 - i / 100)``, stopping early once the loss is below ``epsilon + 2e-5 * i`` (the schedules
    of the authors' code). One embedding per step serves all frames of the video. Returns the embeddings
    ``(steps, 1, l, d)`` in sampling order, float32. The UNet's weights get no gradient. ``windows``: the UNet runs
    on windows of frames (:class:`~tuneavideo.windows.WindowedUNet`); the gradient flows through every window, so
    the optimisation's memory, unlike sampling's, grows with the number of windows.
    """
    num_steps = len(trajectory) - 1
    scheduler.set_timesteps(num_steps, device=trajectory[-1].device)
    dtype = next(unet.parameters()).dtype
    model = WindowedUNet(unet, windows)
    context = context.to(dtype)
    embedding = uncond.detach().float()
    optimised = []
    latent = trajectory[-1].float()
    for i, t in enumerate(scheduler.timesteps):
        target = trajectory[num_steps - i - 1].float()
        with torch.no_grad():
            cond_output = model(latent.to(dtype), t, context).sample.float()
        embedding = embedding.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([embedding], lr=learning_rate * (1 - i / 100))
        for _ in range(inner_steps):
            with torch.enable_grad():
                uncond_output = model(latent.to(dtype), t, embedding.to(dtype)).sample.float()
                output = uncond_output + guidance_scale * (cond_output - uncond_output)
                previous = scheduler.step(output, t, latent).prev_sample
                loss = torch.nn.functional.mse_loss(previous, target)
                optimizer.zero_grad()
                loss.backward()
            optimizer.step()
            if loss.item() < epsilon + i * 2e-5:
                break
        embedding = embedding.detach()
        optimised.append(embedding)
        with torch.no_grad():  # go on from where guided sampling with the optimised embedding lands
            uncond_output = model(latent.to(dtype), t, embedding.to(dtype)).sample.float()
            output = uncond_output + guidance_scale * (cond_output - uncond_output)
            latent = scheduler.step(output, t, latent).prev_sample
        if callback is not None:
            callback(i + 1, num_steps)
    return torch.stack(optimised)
