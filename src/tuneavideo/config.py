"""Typed configs, saved and loaded as YAML; also reads the reference implementation's config files."""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import TuneAVideoError

DEFAULT_TRAINABLE = ("attn1.to_q", "attn2.to_q", "attn_temp")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
PROFILES = ("default", "low-memory")  # what tuning.apply_profile recomputes; see TuneConfig.profile
RESIZE_MODES = ("crop", "squash", "pad")
FRAME_ATTENTION = ("sparse-causal", "per-frame")
FRAME_NORMS = ("pooled", "per-frame")
# Attention control while editing (tuneavideo.control): none (the method), Prompt-to-Prompt with the source branch in
# the batch (Video-P2P), or FateZero's fusion with the maps recorded while inverting.
CONTROL_MODES = ("none", "p2p", "fatezero")
# ddim: the method's inversion with the empty prompt; negative-prompt (Miyake et al. 2023) and null-text (Mokady et
# al. 2023) invert with the source prompt (tuneavideo.inversion).
INVERSION_METHODS = ("ddim", "negative-prompt", "null-text")
# The largest width and height accepted: SD's VAE and UNet run at any multiple of 8, but 4096 px is 8x SD 1.5's
# training size and needs far more memory than one GPU has (a 24-frame clip at 512 px needs 12-24 GiB to tune).
MAX_SIZE = 4096


class ConfigError(TuneAVideoError):
    """A config value or file that cannot be used; the message names it and the fix."""


@dataclass
class VideoConfig:
    """Which frames of which video, at what size."""

    path: str = ""
    prompt: str = ""
    num_frames: int = 24
    width: int = 512
    height: int = 512
    start: int = 0
    stride: int = 1
    resize: str = "crop"  # crop | squash | pad


@dataclass
class TuneConfig:
    """One-shot tuning (Tune-A-Video section 3.3; defaults are the reference's)."""

    base_model: str = ""
    steps: int = 500
    learning_rate: float = 3e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 33
    mixed_precision: str = "auto"  # auto: bf16 on a GPU that has it, fp16 on older GPUs, fp32 on the CPU
    gradient_checkpointing: bool = True
    # default: recompute only the highest-resolution UNet level in the backward pass (fits 24 frames at
    # 512x512 in 24 GiB); low-memory: recompute every block, and VAE-encode 2 frames at a time (12 GiB).
    # gradient_checkpointing=False recomputes nothing in either profile: fastest, most memory.
    profile: str = "default"
    channels_last: bool = False  # the UNet's convolutions in channels-last memory format
    compile: bool = False  # torch.compile the UNet (minutes of compilation on the first steps)
    trainable_modules: tuple[str, ...] = DEFAULT_TRAINABLE
    frame_attention: str = "sparse-causal"  # or "per-frame": the paper's ablation of sparse-causal attention
    # ResNet GroupNorm statistics: "pooled" over all frames of the video (the inflation of the method and the
    # reference), or "per-frame" (as the image model computes them): an ablation
    frame_norms: str = "pooled"
    checkpoint_every: int = 100
    validation_every: int = 0


@dataclass
class SampleConfig:
    """DDIM inversion and sampling (Tune-A-Video section 3.4; defaults are the reference's)."""

    num_inference_steps: int = 50
    guidance_scale: float = 12.5
    negative_prompt: str = ""
    eta: float = 0.0
    seed: int = 33
    use_inversion: bool = True
    num_inversion_steps: int = 50
    prompts: list[str] = field(default_factory=list)  # validation prompts during tuning
    # Attention-controlled editing (tuneavideo.control); the defaults are the method's plain edit.
    inversion: str = "ddim"  # one of INVERSION_METHODS
    control: str = "none"  # one of CONTROL_MODES
    cross_replace: float = 0.8  # fraction of the first steps whose cross-attention maps come from the source
    self_replace: float = 0.4  # likewise for the (sparse-causal) self-attention maps
    reweight: list[str] = field(default_factory=list)  # "WORD=FACTOR": scale the edit prompt's attention to WORD
    blend: list[str] = field(default_factory=list)  # words whose cross-attention marks the region to edit
    blend_threshold: float = 0.3  # of the blend map normalised to a maximum of 1
    # False (Video-P2P's decoupled guidance): the edited branch's guidance uses the plain unconditional embedding,
    # the source branch the inversion's; True: both use the inversion's
    coupled_guidance: bool = False
    # Videos longer than the tuned clip (tuneavideo.windows): temporal attention and the pooled norms act on windows of
    # `window` frames (0: the tuned clip's length), neighbours sharing `overlap` frames (-1: a quarter of the window)
    window: int = 0
    overlap: int = -1


@dataclass
class RunConfig:
    video: VideoConfig = field(default_factory=VideoConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tune"]["trainable_modules"] = list(self.tune.trainable_modules)
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        config = cls()
        for section_name, section in (data or {}).items():
            target = getattr(config, section_name, None)
            if not dataclasses.is_dataclass(target) or not isinstance(section, dict):
                raise ConfigError(f"{source}: unknown section {section_name!r}; expected video, tune, sample")
            names = {f.name for f in dataclasses.fields(target)}
            for key, value in section.items():
                if key not in names:
                    raise ConfigError(f"{source}: unknown key {section_name}.{key}; known keys: {', '.join(sorted(names))}")
                setattr(target, key, value)
        if isinstance(config.tune.trainable_modules, list):
            config.tune.trainable_modules = tuple(config.tune.trainable_modules)
        config.validate(source)
        return config

    @classmethod
    def load(cls, path: str | Path, log: Callable[[str], None] | None = None) -> RunConfig:
        """Load our YAML, or a reference implementation config (``train_data:`` ...) unchanged; ``log`` takes the
        note on a reference config's settings that have no counterpart here (default: stderr)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; check the path")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML ({str(error).splitlines()[0]}); fix the file") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} does not hold a mapping of settings; is it a config file?")
        if "train_data" in data or "pretrained_model_path" in data:
            return from_reference_config(data, str(path), log)
        return cls.from_dict(data, str(path))

    def validate(self, source: str = "config") -> None:
        """Check every field's type, then its value: the one place where settings from YAML, the command
        line and the API are checked. Raises :class:`ConfigError` naming the field and the fix."""
        for section_name in ("video", "tune", "sample"):
            _check_types(getattr(self, section_name), section_name, source)
        v, t, s = self.video, self.tune, self.sample
        for name, value in (("width", v.width), ("height", v.height)):
            if value <= 0 or value % 8:
                raise ConfigError(f"{name} {value} is not a positive multiple of 8; use e.g. {max(8, round(value / 8) * 8)}")
            if value > MAX_SIZE:
                raise ConfigError(f"{name} {value} is larger than {MAX_SIZE} px, beyond what one GPU's memory holds; use e.g. 512")
        if v.num_frames < 1 or v.stride < 1 or v.start < 0:
            raise ConfigError("num_frames and stride must be at least 1 and start at least 0")
        _check_choice("resize", v.resize, RESIZE_MODES)
        _check_choice("mixed_precision", t.mixed_precision, MIXED_PRECISION)
        _check_choice("profile", t.profile, PROFILES)
        _check_choice("frame_attention", t.frame_attention, FRAME_ATTENTION)
        _check_choice("frame_norms", t.frame_norms, FRAME_NORMS)
        if t.steps < 1:
            raise ConfigError(f"tune steps (--train-steps) is {t.steps}; tuning needs at least 1 step, e.g. 500")
        if not math.isfinite(t.learning_rate) or t.learning_rate <= 0:
            raise ConfigError(f"learning_rate {t.learning_rate} must be a positive finite number; use e.g. 3e-5")
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(t, name)
            if not 0 <= value < 1:
                raise ConfigError(f"{name} {value} must be at least 0 and below 1; use e.g. 0.9")
        for name in ("adam_weight_decay", "adam_epsilon", "max_grad_norm"):
            value = getattr(t, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} {value} must be a finite number, 0 or more")
        for name in ("checkpoint_every", "validation_every"):
            if getattr(t, name) < 0:
                raise ConfigError(f"{name} {getattr(t, name)} is negative; give a step count, or 0 for never")
        if not t.trainable_modules or not all(t.trainable_modules):
            raise ConfigError("trainable_modules is empty; give at least one module name pattern such as attn_temp")
        if s.num_inference_steps < 1 or s.num_inversion_steps < 1:
            raise ConfigError("num_inference_steps and num_inversion_steps must be at least 1")
        if not math.isfinite(s.guidance_scale):
            raise ConfigError(f"guidance_scale {s.guidance_scale} is not finite; use e.g. 12.5")
        if not 0 <= s.eta <= 1:
            raise ConfigError(f"eta {s.eta} must be between 0 (deterministic DDIM) and 1")
        _check_windows(s)
        _check_control(s)


def _check_windows(s: SampleConfig) -> None:
    if s.window < 0:
        raise ConfigError(f"window {s.window} is negative; give a frame count such as 16, or 0 for the tuned clip's length")
    if s.overlap < -1:
        raise ConfigError(f"overlap {s.overlap} is negative; give a frame count such as 4, or -1 for a quarter of the window")
    if s.window and s.overlap >= s.window:
        raise ConfigError(f"overlap {s.overlap} must be smaller than the window of {s.window} frames; use e.g. --overlap {s.window // 4}")


def _check_control(s: SampleConfig) -> None:
    _check_choice("inversion", s.inversion, INVERSION_METHODS)
    _check_choice("control", s.control, CONTROL_MODES)
    for name in ("cross_replace", "self_replace"):
        if not 0 <= getattr(s, name) <= 1:
            raise ConfigError(f"{name} {getattr(s, name)} must be a fraction of the steps between 0 and 1; use e.g. 0.8")
    if not 0 < s.blend_threshold < 1:
        raise ConfigError(f"blend_threshold {s.blend_threshold} must be between 0 and 1; use e.g. 0.3")
    parse_reweight(s.reweight)
    if s.control != "none" and not s.use_inversion:
        raise ConfigError(f"--control {s.control} edits the inverted source; drop --no-inversion")
    if s.inversion != "ddim" and not s.use_inversion:
        raise ConfigError(f"--inversion {s.inversion} with --no-inversion: drop one of them")
    if s.control == "none" and (s.reweight or s.blend):
        raise ConfigError("--reweight and --blend act on attention maps; add --control p2p (or fatezero)")
    if s.control == "fatezero" and s.inversion == "ddim":
        raise ConfigError("--control fatezero records attention while inverting with the source prompt; "
                          "add --inversion null-text or --inversion negative-prompt")
    if s.control == "fatezero" and not s.blend:
        raise ConfigError("--control fatezero needs --blend WORD...: the source prompt's words that mark the region to edit")
    if s.inversion == "null-text" and s.use_inversion and s.guidance_scale <= 1:
        raise ConfigError(f"--inversion null-text optimises the unconditional embedding of guidance, which a scale of "
                          f"{s.guidance_scale:g} does not use; give --guidance above 1 (e.g. 7.5)")
    if (s.inversion == "null-text" or s.control == "fatezero") and s.use_inversion and s.num_inversion_steps != s.num_inference_steps:
        what = "--inversion null-text optimises one embedding" if s.inversion == "null-text" else "--control fatezero records maps"
        raise ConfigError(f"{what} per sampling step: give --inversion-steps {s.num_inference_steps} "
                          f"(now {s.num_inversion_steps}), the same as --steps")


def parse_reweight(entries: list[str]) -> dict[str, float]:
    """``["red=2", "sky=0.5"]`` as ``{"red": 2.0, "sky": 0.5}``; :class:`ConfigError` naming a malformed entry."""
    factors = {}
    for entry in entries:
        word, _, value = entry.partition("=")
        factor = _float_text(value)
        if not word.strip() or factor is None or not math.isfinite(factor) or factor < 0:
            raise ConfigError(f"reweight {entry!r} is not WORD=FACTOR with a factor of 0 or more; write e.g. red=2")
        factors[word.strip()] = factor
    return factors


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} {value!r} is unknown; use one of {', '.join(allowed)}")


_KINDS = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}


def _check_types(section: Any, section_name: str, source: str) -> None:
    """Each field of a config dataclass holds its annotated type: str, int, float (an int is one too), bool,
    or a tuple or list of str. A float field also takes a text that is a number, as YAML 1.1 reads ``3e-5``
    (no dot) as text; ``"64"`` for an int field is an error with a hint."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value, kind = getattr(section, f.name), hints[f.name]
        where = f"{source}: {section_name}.{f.name}"
        origin = typing.get_origin(kind)
        if origin in (tuple, list):
            if isinstance(value, str):
                raise ConfigError(f"{where} must be a list of text, got the text {value!r}; write [{value}]")
            if not isinstance(value, (tuple, list)) or not all(isinstance(item, str) for item in value):
                raise ConfigError(f"{where} must be a list of text, got {value!r}; write each item as text in [ ]")
            continue
        if kind is float and isinstance(value, str) and _float_text(value) is not None:
            # YAML 1.1 (PyYAML) reads a number written without a dot, such as 3e-5, as text: take it as the number
            value = _float_text(value)
            setattr(section, f.name, value)
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            hint = "; write it without quotes" if isinstance(value, str) and kind in (int, float) else ""
            raise ConfigError(f"{where} must be {_KINDS[kind]}, got {value!r}{hint}")


def _float_text(text: str) -> float | None:
    """The number a text such as ``"3e-5"`` writes, or None."""
    try:
        return float(text)
    except ValueError:
        return None


# The reference's own settings this reader takes as they are, or maps below; any other key is named in a note.
_REFERENCE_KEYS = frozenset({
    "pretrained_model_path", "output_dir", "train_data", "validation_data", "validation_steps", "trainable_modules",
    "train_batch_size", "max_train_steps", "learning_rate", "scale_lr", "lr_scheduler", "lr_warmup_steps", "adam_beta1",
    "adam_beta2", "adam_weight_decay", "adam_epsilon", "max_grad_norm", "gradient_accumulation_steps",
    "gradient_checkpointing", "checkpointing_steps", "resume_from_checkpoint", "mixed_precision", "use_8bit_adam",
    "enable_xformers_memory_efficient_attention", "seed",
})


def from_reference_config(data: dict[str, Any], source: str, log: Callable[[str], None] | None = None) -> RunConfig:
    """Map a config file of the reference implementation (``configs/man-skiing.yaml``) to ours.

    Mapped as the reference uses them: ``seed`` seeds tuning and the validation samples; ``scale_lr``
    multiplies the learning rate by ``gradient_accumulation_steps`` (times the batch of 1, on one process);
    the validation ``negative_prompt`` and ``eta``; frames are squashed to the size (``resize: squash``), as the
    reference's video reader does. ``enable_xformers_memory_efficient_attention`` has no effect (attention runs
    through PyTorch's SDPA); ``train_batch_size`` must be 1 and ``use_8bit_adam`` false, as the reference's own
    examples have them. What has no counterpart here (a learning-rate schedule other than constant, warmup,
    gradient accumulation, validation videos of another length or size than tuned, ``resume_from_checkpoint``,
    unknown keys) is ignored with one note, through ``log`` (default: stderr), naming each.
    """
    train = data.get("train_data") or {}
    val = data.get("validation_data") or {}
    if data.get("train_batch_size", 1) != 1:
        raise ConfigError(f"{source}: train_batch_size must be 1 (one video); remove the setting")
    if data.get("use_8bit_adam"):
        raise ConfigError(f"{source}: use_8bit_adam is not supported; set it to False")
    mixed = data.get("mixed_precision", "fp16")

    def get(section: dict[str, Any], key: str, default: Any) -> Any:
        value = section.get(key, default)
        if isinstance(value, str) and isinstance(default, float):  # OmegaConf, the reference's reader, reads 3e-5 as a number
            try:
                return float(value)
            except ValueError:
                return value
        return default if value is None else value

    modules = get(data, "trainable_modules", DEFAULT_TRAINABLE)
    accumulation = get(data, "gradient_accumulation_steps", 1)
    learning_rate = get(data, "learning_rate", 3e-5)
    if get(data, "scale_lr", False) and isinstance(learning_rate, float) and isinstance(accumulation, int):
        learning_rate *= accumulation  # the reference: lr * gradient_accumulation_steps * train_batch_size * processes
    seed = get(data, "seed", 33)
    config = RunConfig(
        video=VideoConfig(
            path=get(train, "video_path", ""),
            prompt=get(train, "prompt", ""),
            num_frames=get(train, "n_sample_frames", 24),
            width=get(train, "width", 512),
            height=get(train, "height", 512),
            start=get(train, "sample_start_idx", 0),
            stride=get(train, "sample_frame_rate", 1),
            resize="squash",
        ),
        tune=TuneConfig(
            base_model=get(data, "pretrained_model_path", ""),
            steps=get(data, "max_train_steps", 500),
            learning_rate=learning_rate,
            adam_beta1=get(data, "adam_beta1", 0.9),
            adam_beta2=get(data, "adam_beta2", 0.999),
            adam_weight_decay=get(data, "adam_weight_decay", 1e-2),
            adam_epsilon=get(data, "adam_epsilon", 1e-8),
            max_grad_norm=get(data, "max_grad_norm", 1.0),
            seed=seed,
            mixed_precision="no" if mixed in (None, "no") else mixed,
            gradient_checkpointing=get(data, "gradient_checkpointing", True),
            trainable_modules=tuple(modules) if isinstance(modules, list) else modules,
            checkpoint_every=get(data, "checkpointing_steps", 100),
            validation_every=get(data, "validation_steps", 0),
        ),
        sample=SampleConfig(
            num_inference_steps=get(val, "num_inference_steps", 50),
            guidance_scale=get(val, "guidance_scale", 12.5),
            negative_prompt=get(val, "negative_prompt", ""),
            eta=get(val, "eta", 0.0),
            seed=seed,
            use_inversion=get(val, "use_inv_latent", True),
            num_inversion_steps=get(val, "num_inv_steps", 50),
            prompts=get(val, "prompts", []),
        ),
    )
    config.validate(source)

    vc = config.video
    ignored = [f"{key}: {data[key]!r}" for key in data if key not in _REFERENCE_KEYS]
    if get(data, "lr_scheduler", "constant") not in ("constant", "constant_with_warmup"):
        ignored.append(f"lr_scheduler: {data['lr_scheduler']!r} (the learning rate stays constant)")
    if get(data, "lr_warmup_steps", 0):
        ignored.append(f"lr_warmup_steps: {data['lr_warmup_steps']!r}")
    if accumulation != 1:
        ignored.append(f"gradient_accumulation_steps: {accumulation!r} (one video per step)")
    for key, tuned in (("video_length", vc.num_frames), ("width", vc.width), ("height", vc.height)):
        if val.get(key) is not None and val[key] != tuned:
            ignored.append(f"validation_data.{key}: {val[key]!r} (videos are sampled at the tuned {tuned})")
    if data.get("resume_from_checkpoint"):
        ignored.append("resume_from_checkpoint (use --resume)")
    if ignored:
        (log or _stderr)(f"note: {source}: ignored, no counterpart here: " + "; ".join(ignored))
    return config


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)
