"""One-shot tuning (Tune-A-Video section 3.3): writes a run folder (see :mod:`tuneavideo.runfolder`)."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch.utils.checkpoint import checkpoint

from .adapter import save_adapter, set_trainable
from .config import ConfigError, RunConfig
from .inversion import ddim_invert
from .loading import BaseModel, load_base
from .meter import measure
from .models import TuneAVideoUNet
from .pipeline import TuneAVideoPipeline
from .runfolder import (ADAPTER, CHECKPOINTS, CONFIG, LOG, SAMPLES, SOURCE, TUNE_RECORD, RunError, atomic_json, atomic_text, checkpoint_step, checkpoints, fingerprint,
                        latest_checkpoint, load_checkpoint, save_checkpoint, slug, write_inversion)
from .video import read_video, write_video


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, checked to exist here; by default cuda when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is unknown; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device} asked for, but this PyTorch sees no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device} asked for, but there are {torch.cuda.device_count()} CUDA GPUs; use cuda:0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device} asked for, but MPS is not available here; use --device cpu")
    return device


def resolve_precision(mixed_precision: str, device: torch.device, log: Callable[[str], None] = print) -> torch.dtype:
    """The dtype of frozen weights and autocast: fp32 for "no" and for "auto" on the CPU."""
    if mixed_precision == "fp16" and device.type == "cpu":
        log("note: fp16 mixed precision needs a GPU; running in fp32 on the CPU")
        return torch.float32
    if mixed_precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed_precision]


def build_video_unet(base: BaseModel, frame_attention: str = "sparse-causal", frame_norms: str = "pooled",
                     seed: int | None = None) -> TuneAVideoUNet:
    """Inflate the base's image UNet, or load the reference's already inflated ``unet/``.

    ``frame_attention`` and ``frame_norms`` are :class:`~tuneavideo.config.TuneConfig`'s (the method: sparse-causal,
    pooled); ``seed`` seeds the new temporal layers' initial weights (``None``: torch's global generator)."""
    if base.unet is None:
        unet = TuneAVideoUNet.from_reference(base.reference_unet_dir)
    else:
        unet = TuneAVideoUNet.from_unet2d(base.unet, seed=seed)
    unet.set_frame_attention(frame_attention)
    unet.pool_norm_over_frames = frame_norms == "pooled"
    return unet


# The reference builds its DDIM scheduler with these values whatever the base's scheduler config says; diffusers'
# defaults for a config that omits them (older conversions, some DreamBooth folders) clip x0 to [-1, 1] and shift
# no timesteps, which degrades the samples and the inversion.
DDIM_FORCED = {"clip_sample": False, "steps_offset": 1}


def build_pipeline(base: BaseModel, unet: TuneAVideoUNet, log: Callable[[str], None] = print) -> TuneAVideoPipeline:
    """The sampling pipeline of ``unet`` with ``base``'s VAE, text encoder and tokenizer and a DDIM scheduler.

    The VAE and text encoder are :func:`detached` copies: placing, casting or freezing the pipeline leaves
    ``base`` as it was, so one loaded base serves any number of runs and edits."""
    changed = {key: value for key, value in DDIM_FORCED.items() if base.scheduler_config.get(key) != value}
    if changed:
        log("note: the DDIM scheduler runs with " + ", ".join(
            f"{key}={value} (the base's config: {base.scheduler_config.get(key, 'unset')})" for key, value in changed.items())
            + ", as the reference does")
    scheduler = DDIMScheduler.from_config({**base.scheduler_config, **DDIM_FORCED})
    return TuneAVideoPipeline(vae=detached(base.vae), text_encoder=detached(base.text_encoder), tokenizer=base.tokenizer,
                              unet=unet, scheduler=scheduler)


def detached(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` whose parameters and buffers share the original's memory but are objects of its own:
    moving, casting or freezing the copy (which replaces its tensors) leaves ``module`` unchanged. Only in-place
    writes to the shared values would reach it; frozen weights get none."""
    memo = {id(p): torch.nn.Parameter(p.detach(), requires_grad=p.requires_grad) for p in module.parameters()}
    memo.update({id(b): b for b in module.buffers()})
    return copy.deepcopy(module, memo)


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move ``module`` to ``device``, casting only when the dtype changes (diffusers warns on any cast)."""
    module.to(device)
    if next(module.parameters()).dtype != dtype:
        module.to(dtype)
    return module


def prepare_models(pipe: TuneAVideoPipeline, device: torch.device, dtype: torch.dtype, trainable: list[str]) -> None:
    """Frozen weights in ``dtype`` on ``device``; trained tensors stay float32 (their master copies).

    Each weight is cast before it moves, so a bf16 UNet never exists in float32 on the device. The trained
    tensors are copies: an inflated UNet shares the image UNet's weights, which tuning must leave as they were.
    """
    place(pipe.vae, device, dtype).requires_grad_(False)
    place(pipe.text_encoder, device, dtype).requires_grad_(False)
    wanted = set(trainable)
    for name, param in pipe.unet.named_parameters():
        trained = name in wanted
        param.data = param.data.to(device=device, dtype=torch.float32 if trained else dtype, copy=trained)
    pipe.unet.to(device=device)  # the buffers


# Checkpointed units: ResNet blocks, whole Transformer2DModels (GroupNorm, proj_in, the video transformer
# blocks, proj_out) and the resamplers. Levels count from the highest resolution: level 0 is
# down_blocks[0] and up_blocks[-1] (64x64 latents at 512x512 px, about half of all activations).
CHECKPOINT_UNITS = (ResnetBlock2D, Transformer2DModel, Downsample2D, Upsample2D)
PROFILE_LEVELS = {"default": (0,), "low-memory": None}  # None: every level and the mid block


def apply_profile(unet: TuneAVideoUNet, profile: str = "default", gradient_checkpointing: bool = True, channels_last: bool = False) -> list[str]:
    """Set the UNet up for tuning under a performance profile (see ``TuneConfig.profile``).

    Gradient checkpointing is PyTorch's non-reentrant ``checkpoint`` around each unit of the profile's
    levels: their activations are recomputed in the backward pass instead of kept. Recomputation
    runs the same operations, so the loss and gradients do not change. A checkpointed module becomes
    an instance of a subclass whose ``forward`` checkpoints (same parameters and names). Returns the
    names of the checkpointed modules (none without ``gradient_checkpointing``); calling it again
    replaces the previous setting.
    """
    if profile not in PROFILE_LEVELS:
        raise ValueError(f"profile {profile!r} is unknown; use one of {', '.join(PROFILE_LEVELS)}")
    levels = PROFILE_LEVELS[profile]
    ups = len(unet.up_blocks)
    prefixes = None if levels is None else tuple(
        prefix for level in levels for prefix in (f"down_blocks.{level}.", f"up_blocks.{ups - 1 - level}.")
    )
    names = []
    for name, module in unet.named_modules():
        if isinstance(module, _Checkpointed):
            module.__class__ = module.__class__.__bases__[1]  # undo an earlier call
        if gradient_checkpointing and isinstance(module, CHECKPOINT_UNITS) and (prefixes is None or name.startswith(prefixes)):
            module.__class__ = _checkpointed_class(type(module))
            names.append(name)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    return names


class _Checkpointed(torch.nn.Module):
    """Mixin: ``forward`` runs under non-reentrant checkpointing when gradients are on."""

    def forward(self, *args, **kwargs):
        forward = super().forward
        if torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)


@functools.cache
def _checkpointed_class(cls: type) -> type:
    return type(f"Checkpointed{cls.__name__}", (_Checkpointed, cls), {})


@dataclass
class TuneResult:
    run_dir: Path
    losses: list[float]
    trainable: list[str]


# A resumed run keeps these settings: they decide what is learnt. Steps, the learning rate, the checkpoint and
# validation intervals, memory settings and all sampling settings may change on --resume.
RESUME_FIXED = {
    "video": ("path", "prompt", "num_frames", "width", "height", "start", "stride", "resize"),
    "tune": ("base_model", "seed", "mixed_precision", "trainable_modules", "frame_attention", "frame_norms",
             "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon", "max_grad_norm"),
}


def _check_new_output(run_dir: Path) -> None:
    """Tuning writes only into a new or empty folder: never into one that holds other files."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"output {run_dir} is a file, not a folder; pick a folder path for --output")
    if (run_dir / ADAPTER).exists():
        raise RunError(f"{run_dir} already holds a tuned model; pick another output folder or delete it")
    if latest_checkpoint(run_dir) is not None:
        raise RunError(f"{run_dir} holds an interrupted run; add --resume to continue it, or pick another output folder")
    if run_dir.is_dir():
        names = sorted(p.name for p in run_dir.iterdir())
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise RunError(f"output {run_dir} is not empty ({shown}) and holds no run to resume; "
                           "tuning writes only into a new or empty folder: pick another --output")


def _check_resume(run_dir: Path, config: RunConfig) -> dict:
    """The checkpoint to resume from, after checking that ``config`` changes only what a resumed run may change."""
    if not (run_dir / CONFIG).is_file():
        raise RunError(f"--resume: {run_dir} holds no run ({CONFIG} is missing); tune without --resume")
    if (run_dir / ADAPTER).exists():
        raise RunError(f"--resume: {run_dir} is a finished run; there is nothing to resume")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise RunError(f"--resume: {run_dir} has no checkpoint to resume from; delete the folder and tune without --resume")
    saved = RunConfig.load(run_dir / CONFIG)
    for section, names in RESUME_FIXED.items():
        for name in names:
            old, new = getattr(getattr(saved, section), name), getattr(getattr(config, section), name)
            if isinstance(old, tuple):
                new = tuple(new)
            if old != new:
                raise RunError(
                    f"--resume: {section}.{name} is {new!r} but the run was tuned with {old!r}; a resumed run keeps "
                    "its clip, prompt, base and model settings: drop the setting, or tune a new run into another folder")
    state = load_checkpoint(checkpoint)
    if config.tune.steps <= state["step"]:
        done = state["step"]
        raise RunError(f"--resume: --train-steps {config.tune.steps} is not more than the {done} step{'' if done == 1 else 's'} "
                       f"already done; give more, e.g. --train-steps {max(state['step'] + 1, saved.tune.steps)}")
    return state


def tune(
    base: BaseModel | str,
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_step: Callable[[int, float, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TuneResult:
    """Tune ``base`` (a loaded base model, or where to load one from) on ``config.video`` and write
    the run folder (see :mod:`tuneavideo.runfolder`). A loaded ``base`` is left unchanged: its weights,
    dtypes, devices and flags are as they were, so it can serve further runs and edits.

    Every trainable tensor gets a gradient with gradient checkpointing on or off: our checkpointing
    (:func:`apply_profile`) is non-reentrant, unlike the reference's, whose down blocks never train.
    ``stop_after`` ends the loop early after that many steps (as an interruption would), after
    writing a checkpoint; ``resume`` continues from the latest checkpoint to the same weights as an
    uninterrupted run. ``on_step(step, loss, seconds)`` is called after each step (benchmarks use it).
    ``should_stop()`` is asked after each step: when it answers True the loop ends there as with ``stop_after``
    (a checkpoint written, no adapter), so a caller on another thread can cancel a run that stays resumable.
    """
    config.validate()
    vc, tc = config.video, config.tune
    run_dir = Path(run_dir)
    device = resolve_device(device)
    state = None
    if resume:
        state = _check_resume(run_dir, config)
    else:
        _check_new_output(run_dir)
    if not vc.prompt:
        raise RunError("the source prompt is empty; describe the video, e.g. --prompt 'a man is skiing'")
    frames = read_video(vc.path, num_frames=vc.num_frames, start=vc.start, stride=vc.stride, width=vc.width, height=vc.height, resize=vc.resize)
    if isinstance(base, str):  # after the cheap checks of the video: a bad path fails before a model loads
        base = load_base(base)

    existed = run_dir.is_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with measure(device) as usage:
            result = _tune(base, config, run_dir, frames, state, stop_after, device, progress, log, on_step, should_stop)
        if (run_dir / ADAPTER).is_file():  # finished: what this call cost (a resumed run: its last part)
            atomic_json(run_dir / TUNE_RECORD, {**usage, "device": str(device), "steps_run": len(result.losses),
                                                "resumed_from_step": state["step"] if state else 0})
        return result
    except BaseException:
        # A new run that fails (or is interrupted) before its first checkpoint leaves nothing behind: the output
        # folder is either a run (complete, or resumable) or as it was. A resumed run keeps all its files.
        if not resume and latest_checkpoint(run_dir) is None and run_dir.is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)
            if existed:
                run_dir.mkdir(exist_ok=True)
        raise


def _tune(base, config, run_dir, frames, state, stop_after, device, progress, log, on_step, should_stop) -> TuneResult:
    vc, tc = config.video, config.tune
    config.save(run_dir / CONFIG)
    if not (run_dir / SOURCE).exists():
        write_video(run_dir / SOURCE, frames, fps=8)

    dtype = resolve_precision(tc.mixed_precision, device, log)
    unet = build_video_unet(base, tc.frame_attention, tc.frame_norms, seed=tc.seed)
    trainable = set_trainable(unet, tc.trainable_modules)
    pipe = build_pipeline(base, unet, log)
    prepare_models(pipe, device, dtype, trainable)
    apply_profile(unet, tc.profile, tc.gradient_checkpointing, tc.channels_last)
    if tc.profile == "low-memory":
        pipe.vae_chunk = 2
    if tc.compile:
        unet.compile()
    unet.train()

    # Encoded once per run, not at every step as the reference does.
    mean, std = pipe.encode_video(frames)
    context = pipe.encode_prompt([vc.prompt]).to(dtype)
    noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)

    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=tc.learning_rate, betas=(tc.adam_beta1, tc.adam_beta2), weight_decay=tc.adam_weight_decay,
        eps=tc.adam_epsilon, fused=device.type == "cuda",
    )
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    generator = torch.Generator(device).manual_seed(tc.seed)
    start = 0
    if state is not None:
        named = dict(unet.named_parameters())
        if set(state["trainable"]) != set(trainable):
            raise RunError(f"the checkpoint in {run_dir / CHECKPOINTS} does not hold this run's trained tensors; "
                           "delete the run folder and tune again")
        with torch.no_grad():
            for name, tensor in state["trainable"].items():
                named[name].copy_(tensor)
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = tc.learning_rate  # the one optimizer setting a resumed run may change
        scaler.load_state_dict(state["scaler"])
        generator.set_state(state["generator"].cpu())
        start = state["step"]
        _truncate_log(run_dir / LOG, start)
        log(f"resuming {run_dir} from step {start}")

    autocast = _autocast(device, dtype)
    losses: list[float] = []
    end = tc.steps if stop_after is None else min(tc.steps, start + stop_after)
    bar = progress_bar(range(start, end), progress, desc="tuning", initial=start, total=tc.steps)
    with open(run_dir / LOG, "a") as log_file:
        for step in bar:
            began = time.perf_counter()
            with torch.enable_grad():
                loss = _train_step(unet, noise_scheduler, mean, std, context, generator, autocast, scaler, optimizer, params, tc.max_grad_norm)
            if not math.isfinite(loss) or not torch.stack([p.isfinite().all() for p in params]).all():
                _diverged(run_dir, step + 1, loss, tc.learning_rate)
            seconds = time.perf_counter() - began
            losses.append(loss)
            log_file.write(json.dumps({"step": step + 1, "loss": loss, "seconds": round(seconds, 4)}) + "\n")
            log_file.flush()
            if on_step is not None:
                on_step(step + 1, loss, seconds)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss:.4f}")
            done = step + 1
            stopping = done < end and should_stop is not None and should_stop()
            if done < tc.steps and ((tc.checkpoint_every and done % tc.checkpoint_every == 0) or done == end or stopping):
                _save_checkpoint(run_dir, done, unet, trainable, optimizer, scaler, generator)
            if tc.validation_every and done % tc.validation_every == 0 and config.sample.prompts:
                with _autocast(device, dtype):
                    _validate(pipe, config, mean, context, run_dir / SAMPLES / f"step-{done}", dtype)
            if stopping:
                break
    if start + len(losses) < tc.steps:
        return TuneResult(run_dir, losses, trainable)

    unet.eval()
    save_adapter(
        unet, trainable, run_dir / ADAPTER, base_model=tc.base_model or base.source, prompt=vc.prompt,
        num_frames=vc.num_frames, width=vc.width, height=vc.height, trainable_modules=list(tc.trainable_modules),
    )
    with _autocast(device, dtype):  # frozen weights in dtype, tuned ones in float32
        invert_run(pipe, config, mean, run_dir, dtype, base, progress=progress)
    for stale in checkpoints(run_dir):
        stale.unlink()
    return TuneResult(run_dir, losses, trainable)


def _diverged(run_dir: Path, step: int, loss: float, learning_rate: float):
    """Stop a run whose loss or trained weights are no longer finite; its last good checkpoint is kept."""
    what = f"the loss is {loss}" if not math.isfinite(loss) else "the trained weights are no longer finite"
    checkpoint = latest_checkpoint(run_dir)
    kept = (f"its checkpoint of step {checkpoint_step(checkpoint)} is kept: resume it with "
            f"--resume --output {run_dir} --learning-rate LOWER") if checkpoint else "nothing was kept: tune again"
    raise RunError(f"tuning diverged at step {step} ({what}); the learning rate {learning_rate:g} is too high, {kept}")


def _truncate_log(path: Path, steps: int) -> None:
    """Drop the log lines of steps after ``steps`` (run again after an interruption), so each step appears once."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, TypeError, KeyError):
            if json.loads(line)["step"] <= steps:
                kept.append(line)
    atomic_text(path, "".join(line + "\n" for line in kept))


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()


def _train_step(unet, noise_scheduler, mean, std, context, generator, autocast, scaler, optimizer, params, max_grad_norm) -> float:
    """One step of the LDM objective: epsilon (or v) MSE at a uniform random timestep."""
    device = mean.device
    latents = mean + std * torch.randn(mean.shape, generator=generator, device=device)  # a posterior sample
    noise = torch.randn(mean.shape, generator=generator, device=device)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (1,), generator=generator, device=device)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    with autocast:
        prediction = unet(noisy.to(context.dtype), t, context).sample
    loss = F.mse_loss(prediction.float(), target)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _save_checkpoint(run_dir, step, unet, trainable, optimizer, scaler, generator) -> None:
    named = dict(unet.named_parameters())
    save_checkpoint(run_dir, step, {
        "step": step,
        "trainable": {name: named[name].detach().cpu() for name in trainable},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "generator": generator.get_state(),
    })


def invert_run(pipe: TuneAVideoPipeline, config: RunConfig, mean: torch.Tensor, run_dir: Path, dtype: torch.dtype,
               base: BaseModel, progress: bool = True) -> torch.Tensor:
    """DDIM-invert the source latents with the empty prompt and save both in the run folder, with ``base``'s key.

    Inverts the posterior mean (the reference inverts one posterior sample; the difference is at
    the VAE's noise level, and the mean makes the result deterministic). The mean is kept so that
    an edit that inverts again (other steps) starts from these latents, not from the lossy source.mp4.
    """
    steps = config.sample.num_inversion_steps
    bar = progress_bar(None, progress, desc="inverting", total=steps)
    empty = pipe.encode_prompt([""]).to(dtype)
    latents = ddim_invert(pipe.unet, pipe.scheduler, mean, empty, steps, callback=lambda i, n: bar.update(1) if bar else None)
    if bar:
        bar.close()
    if not latents.isfinite().all():
        raise RunError(f"the DDIM inversion of {run_dir / SOURCE} is not finite; edit with --no-inversion, or tune with --mixed-precision no")
    write_inversion(run_dir, latents, steps=steps, base_key=base_key(base), base_model=config.tune.base_model or base.source,
                    source_latents=mean, vae_key=vae_key(base))
    return latents


def base_key(base: BaseModel) -> str:
    """The identity of a base model (its weights and noise schedule): the key of a run's inversion cache."""
    schedule = {k: v for k, v in base.scheduler_config.items() if not k.startswith("_")}
    reference = str(base.reference_unet_dir) if base.unet is None else None
    return fingerprint((base.vae, base.text_encoder, base.unet), extra={"scheduler": schedule, "reference_unet": reference})


def vae_key(base: BaseModel) -> str:
    """The identity of a base's VAE: source latents it encoded serve every base with the same VAE."""
    return fingerprint((base.vae,))


@torch.no_grad()
def _validate(pipe, config, mean, context, folder: Path, dtype) -> None:
    was_training = pipe.unet.training
    pipe.unet.eval()
    sc = config.sample
    empty = pipe.encode_prompt([""]).to(dtype)
    latents = ddim_invert(pipe.unet, pipe.scheduler, mean, empty, sc.num_inversion_steps) if sc.use_inversion else None
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(pipe.unet.device).manual_seed(sc.seed)
    for index, prompt in enumerate(sc.prompts):
        video = pipe(prompt, config.video.num_frames, config.video.height, config.video.width, sc.num_inference_steps,
                     sc.guidance_scale, sc.negative_prompt, sc.eta, generator, latents)[0]
        write_video(folder / f"{index:02d}-{slug(prompt)}.gif", video, fps=8)
    pipe.unet.train(was_training)


def progress_bar(iterable, enabled: bool, **kwargs):
    """A tqdm bar over ``iterable`` (or one updated by hand when it is ``None``); without ``enabled``, no bar."""
    if not enabled:
        return iterable if iterable is not None else None
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
