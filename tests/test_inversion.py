"""DDIM inversion against a hand-written implementation of the formula, and an invert-then-sample round trip."""

import pytest
import torch
from diffusers import DDIMScheduler
from tiny import SD_SCHEDULER, tiny_unet

from tuneavideo.inversion import ddim_invert
from tuneavideo.models import TuneAVideoUNet
from tuneavideo.pipeline import TuneAVideoPipeline



@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def sd_alphas_cumprod() -> torch.Tensor:
    """SD's schedule by hand: scaled_linear betas 0.00085 -> 0.012 over 1000 steps."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def naive_invert(unet, latents, context, steps):
    alphas = sd_alphas_cumprod()
    stride = 1000 // steps
    x = latents.double()
    for t in range(1, 1000, stride):  # 1, 21, ..., 981 for 50 steps (steps_offset 1)
        a_prev = alphas[t - stride] if t - stride >= 0 else alphas[0]
        a_t = alphas[t]
        eps = unet(x.float(), t, context).sample.double()
        x0 = (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
        x = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
    return x.float()


def test_inversion_matches_the_formula():
    unet = TuneAVideoUNet.from_unet2d(tiny_unet())
    scheduler = DDIMScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k != "skip_prk_steps"})
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 3, 8, 8)
    context = torch.randn(1, 7, 32)
    ours = ddim_invert(unet, scheduler, latents, context, num_steps=10)
    torch.testing.assert_close(ours, naive_invert(unet, latents, context, 10), atol=1e-4, rtol=1e-4)
    assert (ours - latents).abs().mean() > 0.3  # it went somewhere


def test_invert_then_sample_reconstructs():
    from tiny import tiny_text_encoder, tiny_tokenizer, tiny_vae

    unet = TuneAVideoUNet.from_unet2d(tiny_unet())
    # A random network's noise estimate swings far more with its input than a trained one's, which
    # breaks DDIM inversion's assumption eps(x_t) ~ eps(x_t-1); a smaller output makes it as smooth.
    unet.conv_out.weight.mul_(0.1)
    scheduler = DDIMScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k != "skip_prk_steps"})
    pipe = TuneAVideoPipeline(tiny_vae(), tiny_text_encoder(), tiny_tokenizer(), unet, scheduler)
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 3, 8, 8) * 0.8
    prompt = "a man is skiing"
    noise = ddim_invert(unet, scheduler, latents, pipe.encode_prompt([prompt]), num_steps=50)

    def sample(start):
        return pipe(prompt, num_frames=3, height=64, width=64, num_inference_steps=50, guidance_scale=1.0,
                    latents=start, output_type="latent")

    def relative_error(x):
        return ((x - latents).abs().mean() / latents.abs().mean()).item()

    assert relative_error(sample(noise)) < 0.03
    assert relative_error(sample(torch.randn_like(noise))) > 0.5  # random noise does not find the video


def test_guidance_applies_only_above_one():
    """As the reference: a guidance scale of 1 or less samples the prompt alone (no unconditional branch)."""
    from tiny import tiny_text_encoder, tiny_tokenizer, tiny_vae

    unet = TuneAVideoUNet.from_unet2d(tiny_unet())
    scheduler = DDIMScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k != "skip_prk_steps"})
    pipe = TuneAVideoPipeline(tiny_vae(), tiny_text_encoder(), tiny_tokenizer(), unet, scheduler)
    noise = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))

    def sample(scale):
        return pipe("a man is skiing", num_frames=2, height=64, width=64, num_inference_steps=3, guidance_scale=scale,
                    negative_prompt="a cat", latents=noise, output_type="latent")

    alone = sample(1.0)
    for scale in (0.0, 0.5, -2.0):
        torch.testing.assert_close(sample(scale), alone, rtol=0, atol=0)
    assert not torch.allclose(sample(3.0), alone, atol=1e-4)
