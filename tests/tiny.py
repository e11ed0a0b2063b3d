"""Tiny real Stable Diffusion components (diffusers/transformers classes, random weights after a seed)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TOKENIZER = Path(__file__).resolve().parents[1] / "src" / "tuneavideo" / "configs" / "sd15" / "tokenizer"
SD_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, skip_prk_steps=True,
)


def tiny_unet(seed: int = 0, block_out_channels: tuple[int, int] = (32, 64)) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=block_out_channels,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=32,
    ).eval()


def tiny_text_encoder(seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    return CLIPTextModel(config).eval()


def tiny_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(TOKENIZER)


def save_tiny_sd(folder: Path, seed: int = 0, block_out_channels: tuple[int, int] = (32, 64)) -> Path:
    """A whole tiny SD pipeline in the diffusers folder layout (model_index.json, unet/, vae/ ...)."""
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed), tokenizer=tiny_tokenizer(), unet=tiny_unet(seed, block_out_channels),
        scheduler=PNDMScheduler.from_config(SD_SCHEDULER), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def reference_config(unet: UNet2DConditionModel) -> dict:
    """A config.json as the reference's training script writes it (diffusers 0.11, 3-D block names)."""
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    keep = ("act_fn", "attention_head_dim", "block_out_channels", "center_input_sample", "cross_attention_dim",
            "downsample_padding", "dual_cross_attention", "flip_sin_to_cos", "freq_shift", "in_channels",
            "layers_per_block", "mid_block_scale_factor", "norm_eps", "norm_num_groups", "num_class_embeds",
            "only_cross_attention", "out_channels", "resnet_time_scale_shift", "sample_size", "upcast_attention",
            "use_linear_projection")
    out = {k: config[k] for k in keep if k in config}
    out.update(
        _class_name="UNet3DConditionModel", _diffusers_version="0.11.1",
        down_block_types=[b.replace("2D", "3D") for b in config["down_block_types"]],
        up_block_types=[b.replace("2D", "3D") for b in config["up_block_types"]],
        mid_block_type="UNetMidBlock3DCrossAttn",
    )
    return out


def tune_toy_run(root: Path, rendered_frames: int = 4, prompt: str = "a red circle moving right on blue sky") -> Path:
    """``root/run``: a tiny SD model tuned for 1 step on the first 4 frames of a rendered red circle moving right
    (``rendered_frames`` frames written as a folder of PNGs, which the run's config names), 32x32, 2 DDIM steps."""
    from PIL import Image

    from tuneavideo.config import RunConfig
    from tuneavideo.toyworld import Clip, render_clip
    from tuneavideo.tuning import tune

    clip = Clip(shape="circle", colour="red", size="large", background="blue sky", path="right",
                num_frames=rendered_frames)
    frames = root / "frames"
    frames.mkdir()
    for index, frame in enumerate(render_clip(clip, size=32)):
        Image.fromarray(frame).save(frames / f"{index:03d}.png")
    config = RunConfig()
    config.video.path, config.video.prompt = str(frames), prompt
    config.video.num_frames, config.video.width, config.video.height = 4, 32, 32
    config.tune.steps, config.tune.gradient_checkpointing, config.tune.checkpoint_every = 1, False, 0
    config.sample.num_inversion_steps = config.sample.num_inference_steps = 2
    config.tune.base_model = str(save_tiny_sd(root / "tiny-sd"))
    tune(config.tune.base_model, config, root / "run", progress=False, log=lambda *_: None)
    return root / "run"
