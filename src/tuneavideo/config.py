"""Typed configs, saved and loaded as YAML; also reads the reference implementation's config files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TRAINABLE = ("attn1.to_q", "attn2.to_q", "attn_temp")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
PROFILES = ("default", "low-memory")  # what tuning.apply_profile recomputes; see TuneConfig.profile


class ConfigError(ValueError):
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
        config.tune.trainable_modules = tuple(config.tune.trainable_modules)
        config.validate()
        return config

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Load our YAML, or a reference implementation config (``train_data:`` ...) unchanged."""
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
            return from_reference_config(data, str(path))
        return cls.from_dict(data, str(path))

    def validate(self) -> None:
        v, t, s = self.video, self.tune, self.sample
        for name, value in (("width", v.width), ("height", v.height)):
            if value <= 0 or value % 8:
                raise ConfigError(f"{name} {value} is not a positive multiple of 8; use e.g. {max(8, round(value / 8) * 8)}")
        if v.num_frames < 1 or v.stride < 1 or v.start < 0:
            raise ConfigError("num_frames and stride must be at least 1 and start at least 0")
        if v.resize not in ("crop", "squash", "pad"):
            raise ConfigError(f"resize {v.resize!r} is unknown; use crop, squash or pad")
        if t.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"mixed_precision {t.mixed_precision!r} is unknown; use one of {', '.join(MIXED_PRECISION)}")
        if t.profile not in PROFILES:
            raise ConfigError(f"profile {t.profile!r} is unknown; use one of {', '.join(PROFILES)}")
        if t.steps < 0:
            raise ConfigError("steps must be 0 or more")
        if t.frame_attention not in ("sparse-causal", "per-frame"):
            raise ConfigError(f"frame_attention {t.frame_attention!r} is unknown; use sparse-causal or per-frame")
        if t.frame_norms not in ("pooled", "per-frame"):
            raise ConfigError(f"frame_norms {t.frame_norms!r} is unknown; use pooled or per-frame")
        if not t.trainable_modules:
            raise ConfigError("trainable_modules is empty; give at least one module name pattern such as attn_temp")
        if s.num_inference_steps < 1 or s.num_inversion_steps < 1:
            raise ConfigError("num_inference_steps and num_inversion_steps must be at least 1")


def from_reference_config(data: dict[str, Any], source: str) -> RunConfig:
    """Map a config file of the reference implementation (``configs/man-skiing.yaml``) to ours.

    ``enable_xformers_memory_efficient_attention`` is ignored (attention always runs through
    PyTorch's SDPA); ``train_batch_size`` must be 1 and ``use_8bit_adam`` false, as the
    reference's own examples have them.
    """
    train = data.get("train_data") or {}
    val = data.get("validation_data") or {}
    if data.get("train_batch_size", 1) != 1:
        raise ConfigError(f"{source}: train_batch_size must be 1 (one video); remove the setting")
    if data.get("use_8bit_adam"):
        raise ConfigError(f"{source}: use_8bit_adam is not supported; set it to False")
    mixed = data.get("mixed_precision", "fp16")
    config = RunConfig(
        video=VideoConfig(
            path=str(train.get("video_path", "")),
            prompt=str(train.get("prompt", "")),
            num_frames=int(train.get("n_sample_frames", 24)),
            width=int(train.get("width", 512)),
            height=int(train.get("height", 512)),
            start=int(train.get("sample_start_idx", 0)),
            stride=int(train.get("sample_frame_rate", 1)),
        ),
        tune=TuneConfig(
            base_model=str(data.get("pretrained_model_path", "")),
            steps=int(data.get("max_train_steps", 500)),
            learning_rate=float(data.get("learning_rate", 3e-5)),
            adam_beta1=float(data.get("adam_beta1", 0.9)),
            adam_beta2=float(data.get("adam_beta2", 0.999)),
            adam_weight_decay=float(data.get("adam_weight_decay", 1e-2)),
            adam_epsilon=float(data.get("adam_epsilon", 1e-8)),
            max_grad_norm=float(data.get("max_grad_norm", 1.0)),
            seed=int(data.get("seed") if data.get("seed") is not None else 33),
            mixed_precision="no" if mixed in (None, "no") else str(mixed),
            gradient_checkpointing=bool(data.get("gradient_checkpointing", True)),
            trainable_modules=tuple(data.get("trainable_modules") or DEFAULT_TRAINABLE),
            checkpoint_every=int(data.get("checkpointing_steps", 100)),
            validation_every=int(data.get("validation_steps", 0)),
        ),
        sample=SampleConfig(
            num_inference_steps=int(val.get("num_inference_steps", 50)),
            guidance_scale=float(val.get("guidance_scale", 12.5)),
            use_inversion=bool(val.get("use_inv_latent", True)),
            num_inversion_steps=int(val.get("num_inv_steps", 50)),
            prompts=[str(p) for p in val.get("prompts") or []],
        ),
    )
    config.validate()
    return config
