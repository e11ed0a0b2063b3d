"""Write ``TRAINING.md`` for a pre-trained toy model folder from its ``training.json`` and evaluation results."""

from __future__ import annotations

import json
from pathlib import Path


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


#: Settings that do not change the weights (monitoring, where snapshots go, the time budget, which a stop step replaces).
_NOT_WEIGHTS = ("log_every", "monitor_every", "snapshot_dir", "max_minutes", "unet_stop_step", "video_stop_step",
                "checkpoint_every")
_FLAGS = {"seed": "--seed", "vae_steps": "--vae-steps", "unet_steps": "--unet-steps", "threads": "--threads"}


def reproduce_flags(training: dict) -> list[str]:
    """The pretraining command-line flags that give the weights of ``training`` (a ``training.json``) again: every
    setting that differs from the shipped run's defaults, the device, and the stop step of a run cut short."""
    from dataclasses import fields

    from .pretrain import FULL

    config = training["config"]
    flags = []
    for field in fields(FULL):
        if field.name in _NOT_WEIGHTS or field.name not in config:
            continue
        default, value = (list(v) if isinstance(v, tuple) else v for v in (getattr(FULL, field.name), config[field.name]))
        if default == value:
            continue
        flags.append(f"{_FLAGS[field.name]} {value}" if field.name in _FLAGS
                     else f"--set {field.name}={json.dumps(value, separators=(',', ':'))}")
    if str(training.get("device", "cpu")).startswith("cuda"):
        flags.append("--device cuda")
    if training.get("unet_stopped_early"):  # cut short by --max-minutes: stop at the same step
        flags.append(f"--unet-stop-step {training['unet_steps_done']}")
    return flags


def write_report(folder: str | Path, results: dict, command: str | None = None) -> Path:
    """``results``: ``{"held_out": evaluate_model(...), "train": evaluate_model(...)}`` (records dropped)."""
    from .pretrain import FULL

    folder = Path(folder)
    training = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    config = training["config"]
    weights = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*.safetensors"))}
    params = training["parameters"]
    trains_text = config.get("train_text_encoder", True)
    prediction = config.get("prediction_type", "epsilon")
    gamma, floor = config["min_snr_gamma"], config.get("x0_weight_floor", 0.0)
    x0_weight = f"min(SNR, {gamma:g})" if gamma else "SNR"
    if floor:
        x0_weight = f"max({x0_weight}, {floor:g})"
    objective = (f"{'v' if prediction == 'v_prediction' else 'epsilon'}-prediction MSE weighted so that the implied "
                 f"clean latent's squared error is weighted {x0_weight}")
    attention = config.get("unet_attention", [True] * (len(config["unet_channels"]) - 1) + [False])
    down_blocks = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention]
    up_blocks = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attention]
    video = training.get("video")
    pooled = ", pooled caption embedding added to the timestep embedding" if config.get("pooled_text_conditioning") else ""
    if config.get("unet_time_scale_shift", "default") == "scale_shift":
        pooled += ", which scales and shifts every ResNet block's normalised features (`resnet_time_scale_shift` scale_shift)"
    high = config.get("high_noise_share", 0.0)
    timesteps = (f"timesteps uniform, except {_pct(high)} of each batch drawn from t >= 500 only; " if high
                 else "timesteps uniform; ")
    if command is None:
        command = "python -m tuneavideo.toymodel.pretrain --output src/tuneavideo/assets/toy-sd " + " ".join(
            reproduce_flags(training))
    lines = [
        "# toy-sd: how this model was trained",
        "",
        "A small text-to-image latent diffusion model in Stable Diffusion's diffusers layout, trained from scratch",
        "on 64x64 renders of the procedural toy world (`tuneavideo.toyworld`). Written by",
        "`tuneavideo.toymodel.pretrain`; measured by `tuneavideo.toymodel.evaluate`.",
        "",
        "## Reproduce",
        "",
        "```",
        f"nice {command.strip()}",
        "python -m tuneavideo.toymodel.evaluate src/tuneavideo/assets/toy-sd --samples "
        f"{results['held_out']['settings']['n_samples']} --seed {results['held_out']['settings']['seed']} "
        f"--steps {results['held_out']['settings']['num_inference_steps']} "
        f"--guidance {results['held_out']['settings']['guidance_scale']:g} --report",
        "```",
        "",
        f"Seed {config['seed']}, torch.set_num_threads({training['threads']}) (same seed, settings, thread count and CPU",
        "kernels give the same weights; a CPU with other vector instructions rounds otherwise and gives other weights),",
        f"torch {training['torch']}" + (f" with its {training['cpu_capability']} kernels" if "cpu_capability" in training else "")
        + f", Python {training['python']}.",
        "",
        "## Run",
        "",
        f"* Total time: {training['total_seconds'] / 60:.1f} min on the "
        f"{'GPU' if str(training.get('device', 'cpu')).startswith('cuda') else 'CPU, %d threads' % training['threads']} "
        f"(VAE {training['vae']['seconds'] / 60:.1f} min, latent cache {training['latent_cache_seconds'] / 60:.1f} min, "
        f"UNet{' + text encoder' if trains_text else ''} {training['unet_seconds'] / 60:.1f} min"
        + (f", video phase {video['seconds'] / 60:.1f} min" if video else "") + ").",
        (f"* VAE: taken unchanged from `{config['vae_from']}` (`vae_from`, no VAE steps); its own recipe is in that "
         "model's TRAINING.md.") if config.get("vae_from") and not config["vae_steps"] else
        f"* VAE: {config['vae_steps']} steps x {config['vae_batch']} freshly rendered scenes, AdamW lr {config['vae_lr']}, "
        f"MSE + 0.1 L1 (object pixels x{1 + config['object_weight']:g}) + {config['kl_weight']:g} KL per latent element, "
        f"posterior log-variance initialised at {config['vae_logvar_init']:g}; "
        f"final reconstruction loss {training['vae']['final_reconstruction_loss']:.5f}.",
        f"* Latent cache: {config['num_scenes']} rendered training scenes encoded once; "
        f"scaling_factor {training['scaling_factor']:.4f} (unit-variance latents).",
        (f"* UNet: taken unchanged from `{config['unet_from']}` (`unet_from`, no UNet steps); its own recipe is in that "
         "model's TRAINING.md.") if config.get("unet_from") else
        f"* UNet{' + text encoder' if trains_text else ' (text encoder frozen at its seeded initialisation)'}: "
        f"{training['unet_steps_done']} of {config['unet_steps']} steps x {config['unet_batch']} "
        f"(posterior samples of cached latents, random caption templates incl. clip templates "
        f"{_pct(config['clip_caption_probability'])}, empty caption {_pct(config['caption_dropout'])}); "
        f"{timesteps}{objective}, offset noise {config.get('offset_noise', 0):g} "
        "(per-sample, per-channel constant added to the noise, so that the background must come from the caption), "
        f"error weighted x{1 + config.get('object_loss_weight', 0):g} on latent pixels at and next to the object, "
        f"AdamW lr {config['lr']} "
        f"(warm-up {config['warmup_steps']}, constant, cosine to {config['final_lr_fraction']:g}x over the last "
        f"{_pct(config['decay_fraction'])}), EMA {config['ema_decay']} "
        f"(the saved weights); final MSE {training['final_mse']:.4f}.",
    ]
    if video:
        lines.append(
            f"* Video phase (the UNet trained on with the GroupNorm statistics that Tune-A-Video pools over a video's "
            f"frames pooled over each training clip's frames): {video['steps_done']} of {config['video_steps']} steps x "
            f"{config['unet_batch']} frames: {config['num_videos']} rendered training clips of {config['video_frames']} "
            f"frames encoded once; a step is {config['unet_batch'] // config['video_frames']} clips (one caption, clip "
            f"templates {_pct(config['video_caption_probability'])}, and one timestep per clip; offset noise per clip"
            + (f"; timesteps in [{config['video_clip_timesteps'][0]}, {config['video_clip_timesteps'][1]})"
               if tuple(config.get("video_clip_timesteps", FULL.video_clip_timesteps)) != FULL.video_clip_timesteps
               else "")
            + (f"; each frame's timestep moved by up to {config['video_timestep_jitter']} from the clip's"
               if config.get("video_timestep_jitter") else "")
            + (f"; a share of the noise variance common to the clip's frames, uniform in [0, "
               f"{config['video_noise_sharing']:g}]" if config.get("video_noise_sharing") else "")
            + (f"; each frame's input to every pooled GroupNorm scaled by exp(N(0, "
               f"{config['video_frame_scale_noise']:g}^2)), one factor per frame and group"
               if config.get("video_frame_scale_noise") else "") + ") "
            f"or, in {_pct(config['video_image_share'])} of the steps, {config['unet_batch']} single frames with "
            f"statistics per frame"
            + ("" if config.get("video_pool_statistics", True) else
               " (the clip steps' statistics, too: `video_pool_statistics` off)")
            + "; the UNet phase's loss"
            + (f", plus in clip steps {config['video_norm_penalty']:g} x the frames' spread under the pooled statistics "
               "(the mean over every pooled GroupNorm, frame and group of log(sigma_frame / sigma_pooled)^2, "
               f"`pretrain.frame_spread_penalty`; {video['final_spread']:.4f} over the last tenth)"
               if config.get("video_norm_penalty") and video.get("final_spread") is not None else "")
            + (f", plus {config['video_norm_offset_penalty']:g} x the frames' offset (the mean of ((mu_frame - mu_pooled) / "
               f"sigma_pooled)^2, `pretrain.frame_offset_penalty`; {video['final_offset']:.4f} over the last tenth)"
               if config.get("video_norm_offset_penalty") and video.get("final_offset") is not None else "")
            + f"; AdamW lr {config['video_lr']} (warm-up 20, constant, cosine to "
            f"0.1x over the last half), EMA {config['video_ema_decay']} (the saved weights); final MSE "
            f"{video['final_mse']:.4f}.")
    lines += [
        "",
        "## Architecture",
        "",
        f"* VAE (`AutoencoderKL`): block_out_channels {tuple(config['vae_channels'])}, 1 layer per block, "
        f"64x64x3 -> {64 // 2 ** (len(config['vae_channels']) - 1)}x{64 // 2 ** (len(config['vae_channels']) - 1)}x4; "
        f"{params['vae'] / 1e6:.2f}M parameters, stored {config['vae_storage_dtype']}.",
        f"* UNet (`UNet2DConditionModel`): block_out_channels {tuple(config['unet_channels'])}, down blocks "
        f"{', '.join(down_blocks)}, UNetMidBlock2DCrossAttn, up blocks {', '.join(reversed(up_blocks))}, 1 layer per "
        f"block, {config['unet_heads']} heads, layer-norm transformer blocks, cross-attention width {config['text_width']}"
        f"{pooled}; {params['unet'] / 1e6:.2f}M parameters, stored "
        f"{config['unet_storage_dtype']} (loaded as float32 by default).",
        f"* Text encoder (`CLIPTextModel`): width {config['text_width']}, {config['text_layers']} layers, "
        f"{config['text_heads']} heads, 16 positions; {params['text_encoder'] / 1e6:.2f}M parameters, stored float32.",
        "* Tokenizer (`CLIPTokenizer`): CLIP's byte-level BPE layout with our own vocab.json/merges.txt, every "
        "caption word of the toy world one token; `model_max_length` 16.",
        "* Scheduler: Stable Diffusion's `PNDMScheduler` config (scaled_linear 0.00085 -> 0.012, 1000 steps, "
        f"{prediction}).",
        f"* Weights: {sum(weights.values()) / 1e6:.1f} MB in all ("
        + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in weights.items()) + ").",
        "",
        "## Held-out combinations",
        "",
        "These (colour, shape, background) triples were never rendered during training (VAE or UNet):",
        "",
    ]
    lines += [f"* {c} {s} on {b}" for c, s, b in training["held_out"]]
    lines += ["", "## Measured quality", ""]
    for kind, title in (("held_out", "held-out combinations"), ("train", "training combinations (for comparison)")):
        if kind not in results:
            continue
        result = results[kind]
        s = result["settings"]
        acc = result["accuracy"]
        lines += [
            f"### {title}",
            "",
            f"{s['samples']} samples ({s['n_samples']} per combination, noise seeds {s['seed']}..{s['seed'] + s['samples'] - 1}), "
            f"DDIM {s['num_inference_steps']} steps, guidance {s['guidance_scale']}, unconditional prompt \"\", "
            "caption templates cycled; read by `tuneavideo.toyworld.detect.detect_frame`.",
            "",
            "| colour | shape | background | all three | size (prompts naming one) | object found | intact |",
            "|---|---|---|---|---|---|---|",
            f"| {_pct(acc.get('colour'))} | {_pct(acc.get('shape'))} | {_pct(acc.get('background'))} | {_pct(acc.get('all'))} "
            f"| {_pct(acc.get('size'))} | {_pct(acc.get('found'))} | {_pct(acc.get('intact'))} |",
            "",
        ]
        if kind == "held_out":
            lines += ["| combination | colour | shape | background | intact |", "|---|---|---|---|---|"]
            for name, per in result["per_combination"].items():
                lines.append(f"| {name} | {_pct(per['colour'])} | {_pct(per['shape'])} | {_pct(per['background'])} "
                             f"| {_pct(per.get('intact'))} |")
            lines.append("")
    path = folder / "TRAINING.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
