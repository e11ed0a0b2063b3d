"""Load the Stable Diffusion base model that Tune-A-Video inflates and tunes.

Three kinds of source are accepted (see :func:`load_base`):

* a hub id such as ``"stable-diffusion-v1-5/stable-diffusion-v1-5"`` (downloaded, or read from the local
  Hugging Face cache when offline);
* a local diffusers pipeline folder (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/``), including a pipeline saved by the Tune-A-Video reference implementation;
* a single ``.safetensors``/``.ckpt`` file in the original CompVis/LDM key layout (a DreamBooth or fine-tuned
  SD 1.x/2.x). It is read offline: the architecture comes from the config folders shipped in
  ``tuneavideo/configs`` (or from ``config=``), and diffusers' own LDM -> diffusers key conversion functions
  rename the weights.

Loading is strict everywhere: a weight the model needs that the source lacks, a weight in the source that the
model has no place for, or a shape that does not fit raises :class:`ModelLoadError` naming the keys. (Left to
themselves, diffusers and transformers only log these cases: a missing weight is left random or on the meta
device, an unknown one is dropped.) A few entries of original checkpoints are known not to be model weights
and are skipped on purpose: the noise-schedule buffers of LatentDiffusion (``betas``, ``alphas_cumprod``, ...),
the EMA copy (``model_ema.*``; like diffusers we load the trained, non-EMA weights), CLIP's ``position_ids``
buffer, and the parts of OpenCLIP that SD 2.x does not use (its last transformer block, ``text_projection``
and ``logit_scale``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .errors import TuneAVideoError

__all__ = ["BaseModel", "CONFIGS_DIR", "ModelLoadError", "detect_sd_version", "load_base"]

logger = logging.getLogger(__name__)

#: Diffusers-layout config folders (no weights) for SD 1.5 and SD 2.1, used to read single-file checkpoints.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

# Key prefixes of an original (CompVis/LDM) Stable Diffusion checkpoint.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."  # SD 1.x: OpenAI CLIP ViT-L/14 in the transformers layout
OPEN_CLIP_PREFIX = "cond_stage_model.model."  # SD 2.x: OpenCLIP ViT-H/14

_VERSION_NAMES = {"sd15": "SD 1.x", "sd21": "SD 2.x"}
_CROSS_ATTENTION_WIDTHS = {768: "sd15", 1024: "sd21"}

# LatentDiffusion registers its noise schedule as buffers; diffusers schedulers recompute it from the config.
_SCHEDULE_BUFFERS = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "logvar",
        "lvlb_weights",
    }
)
# stable-diffusion-2-base (512 px, epsilon) was released at this global step; diffusers uses the same test.
_SD2_BASE_GLOBAL_STEP = 875000
_MAX_NAMED = 5


class ModelLoadError(TuneAVideoError):
    """The base model could not be loaded; the message (one line) names the problem and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass
class BaseModel:
    """The parts of a Stable Diffusion pipeline that Tune-A-Video starts from (all in eval mode, on the CPU)."""

    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNet2DConditionModel | None  # None for a Tune-A-Video reference pipeline: see reference_unet_dir
    scheduler_config: dict
    source: str
    reference_unet_dir: Path | None = None


# --------------------------------------------------------------------------------------------------- public API


def load_base(
    source: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    config: str | os.PathLike | None = None,
    prediction_type: str | None = None,
) -> BaseModel:
    """Load a Stable Diffusion 1.x/2.x base model from a hub id, a diffusers folder or a single checkpoint file.

    ``source``: an existing folder with ``model_index.json``; an existing ``.safetensors``/``.ckpt``/``.pt``/
    ``.bin`` file in the original LDM key layout; or a hub id ``owner/name`` (taken from the local Hugging Face
    cache when it is there, without touching the network; otherwise downloaded unless ``HF_HUB_OFFLINE`` is set).

    ``config``: for a single file only, a diffusers-format config folder (``unet/config.json``,
    ``vae/config.json``, ``text_encoder/config.json``, ``tokenizer/``, ``scheduler/scheduler_config.json``)
    describing the checkpoint; by default SD 1.x vs 2.x is detected from the checkpoint and the shipped
    ``configs/sd15`` or ``configs/sd21`` is used.

    ``prediction_type`` overrides the scheduler config's ``prediction_type`` (``"epsilon"``,
    ``"v_prediction"`` or ``"sample"``); needed e.g. for a 512-px SD 2.x-base single file (epsilon), since a
    single SD 2.x file is taken to be the 768-px v-prediction model.

    A pipeline saved by the Tune-A-Video reference implementation (``unet/config.json`` with ``_class_name``
    ``UNet3DConditionModel``) loads with ``unet=None`` and ``reference_unet_dir`` set to its unet folder.

    Raises :class:`ModelLoadError` (a ``ValueError``) with a one-line message.
    """
    if not isinstance(dtype, torch.dtype):
        raise ModelLoadError(f"dtype must be a torch.dtype such as torch.float16, not {dtype!r}")
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise ModelLoadError(
            f"unknown prediction_type {prediction_type!r}; use one of {', '.join(PREDICTION_TYPES)}"
        )
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        return _load_single_file(path, text, dtype=dtype, config=config, prediction_type=prediction_type)
    if config is not None:
        raise ModelLoadError(
            f"config= only applies to a single .safetensors/.ckpt checkpoint, and '{text}' is not one; "
            "drop config= (diffusers folders and hub models carry their own configs)"
        )
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"'{text}' is a folder but not a diffusers pipeline (it has no model_index.json); pass a diffusers "
                "folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a .safetensors file"
            )
        return _load_folder(path, text, dtype=dtype, prediction_type=prediction_type)
    if path.is_file():
        raise ModelLoadError(
            f"'{text}' is neither a diffusers folder nor a checkpoint file ({', '.join(SINGLE_FILE_SUFFIXES)}); "
            "pass a diffusers folder, a .safetensors/.ckpt file or a hub id like owner/name"
        )
    if _looks_like_hub_id(text):
        return _load_hub(text, dtype=dtype, prediction_type=prediction_type)
    raise ModelLoadError(
        f"no such file or folder: '{text}'; pass an existing diffusers folder, a .safetensors/.ckpt file, "
        "or a hub id like owner/name"
    )


def detect_sd_version(state_dict: Mapping[str, Any]) -> str:
    """Tell an SD 1.x (``"sd15"``) from an SD 2.x (``"sd21"``) checkpoint in the original LDM key layout.

    The UNet's cross-attention width decides (the ``attn2.to_k`` weights are ``[inner, 768]`` for SD 1.x's CLIP
    ViT-L and ``[inner, 1024]`` for SD 2.x's OpenCLIP ViT-H); the text encoder's key prefix
    (``cond_stage_model.transformer.`` vs ``cond_stage_model.model.``) must agree when present. Only the keys and
    those shapes are looked at. Raises :class:`ModelLoadError` for anything else (SDXL, inpainting, diffusers-
    layout weights, unknown widths).
    """
    keys = list(state_dict.keys())
    if any(k.startswith("conditioner.embedders.") for k in keys):
        raise ModelLoadError(
            "this checkpoint is Stable Diffusion XL (it has conditioner.embedders.* keys); only SD 1.x and 2.x "
            "bases are supported: pass an SD 1.x/2.x checkpoint"
        )
    unet_keys = [k for k in keys if k.startswith(UNET_PREFIX)]
    if not unet_keys:
        raise ModelLoadError(
            "not a Stable Diffusion checkpoint in the original (LDM/CompVis) layout: it has no "
            f"{UNET_PREFIX}* keys (diffusers-layout weights belong in a diffusers folder); pass a full "
            "SD 1.x/2.x .safetensors/.ckpt or the diffusers folder"
        )
    conv_in = UNET_PREFIX + "input_blocks.0.0.weight"
    if conv_in in state_dict and len(state_dict[conv_in].shape) == 4 and state_dict[conv_in].shape[1] != 4:
        raise ModelLoadError(
            f"this UNet takes {state_dict[conv_in].shape[1]} input channels (an inpainting or instruct-pix2pix "
            "model); only text-to-image SD 1.x/2.x checkpoints (4 channels) are supported"
        )
    widths = sorted({int(state_dict[k].shape[-1]) for k in unet_keys if k.endswith(".attn2.to_k.weight")})
    if len(widths) != 1 or widths[0] not in _CROSS_ATTENTION_WIDTHS:
        found = f"width {widths[0]}" if len(widths) == 1 else f"widths {widths}" if widths else "no attn2.to_k weights"
        raise ModelLoadError(
            f"cannot tell the Stable Diffusion version: the UNet's cross-attention has {found}, not 768 (SD 1.x) "
            "or 1024 (SD 2.x); pass config= a diffusers config folder that describes this checkpoint"
        )
    version = _CROSS_ATTENTION_WIDTHS[widths[0]]
    has_clip = any(k.startswith(CLIP_PREFIX) for k in keys)
    has_open_clip = any(k.startswith(OPEN_CLIP_PREFIX) for k in keys)
    text_version = "sd15" if has_clip and not has_open_clip else "sd21" if has_open_clip and not has_clip else None
    if has_clip and has_open_clip:
        raise ModelLoadError(
            f"the checkpoint holds two text encoders ({CLIP_PREFIX}* and {OPEN_CLIP_PREFIX}*); pass a plain "
            "SD 1.x/2.x checkpoint"
        )
    if text_version is not None and text_version != version:
        raise ModelLoadError(
            f"inconsistent checkpoint: its UNet is {_VERSION_NAMES[version]} (cross-attention width {widths[0]}) "
            f"but its text encoder is {_VERSION_NAMES[text_version]}'s; pass config= a diffusers config folder "
            "that describes it"
        )
    return version


# -------------------------------------------------------------------------------------------------- hub models


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _looks_like_hub_id(text: str) -> bool:
    return (
        bool(_HUB_ID.match(text))
        and ".." not in text
        and not text.lower().endswith(SINGLE_FILE_SUFFIXES)
    )


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them once, at import)."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name)
        if value is not None:
            return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE)


def _load_hub(repo_id: str, *, dtype: torch.dtype, prediction_type: str | None) -> BaseModel:
    from huggingface_hub.errors import EntryNotFoundError

    hub_errors = (OSError, ValueError, EntryNotFoundError)
    offline = _hub_offline()
    folder = None
    # The local cache first: a cached model then loads without touching the network (without this, no network
    # costs ~25 s of retries before huggingface_hub falls back to the cache). Only if it is not (completely)
    # cached, and we may, ask the hub.
    try:
        folder = _hub_snapshot(repo_id, local_files_only=True)
    except hub_errors as e:
        error: Exception | None = e
    else:
        error = None if _is_complete(folder) else FileNotFoundError(f"incomplete cached snapshot {folder}")
    if error is not None and not offline:
        try:
            folder, error = _hub_snapshot(repo_id, local_files_only=False), None
        except hub_errors as e:
            error = e
    if error is not None:
        raise ModelLoadError(
            f"could not load '{repo_id}' from the hub (no network or no such model"
            + ("; HF_HUB_OFFLINE is set and it is not in the local cache" if offline else "")
            + "); pass a local diffusers folder or a .safetensors file"
        ) from error
    return _load_folder(folder, repo_id, dtype=dtype, prediction_type=prediction_type)


def _hub_snapshot(repo_id: str, *, local_files_only: bool) -> Path:
    """The local folder of a hub pipeline, downloading what Tune-A-Video needs unless ``local_files_only``."""
    from huggingface_hub import hf_hub_download, snapshot_download

    hf_hub_download(repo_id, "model_index.json", local_files_only=local_files_only)
    unet_config = _read_json(Path(hf_hub_download(repo_id, "unet/config.json", local_files_only=local_files_only)))
    if unet_config.get("_class_name") == "UNet3DConditionModel":
        # a Tune-A-Video reference pipeline: its model_index names a module diffusers cannot import, so fetch
        # its folders directly (they hold one weight file each)
        folder = snapshot_download(
            repo_id,
            allow_patterns=["model_index.json", "unet/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"],
            local_files_only=local_files_only,
        )
    else:
        from diffusers import StableDiffusionPipeline

        # diffusers picks the weight files (safetensors over .bin, no fp16 variant, no root .ckpt); naming the
        # components we do not use keeps it from downloading them
        folder = StableDiffusionPipeline.download(
            repo_id, safety_checker=None, feature_extractor=None, image_encoder=None, local_files_only=local_files_only
        )
    return Path(folder)


def _is_complete(folder: Path) -> bool:
    """Whether a (cached) pipeline folder has every file that :func:`_load_folder` reads."""

    def has_weights(part: str) -> bool:
        return any((folder / part).glob("*.safetensors")) or any((folder / part).glob("*.bin"))

    tokenizer = folder / "tokenizer"
    return (
        (folder / "model_index.json").is_file()
        and (folder / "scheduler" / "scheduler_config.json").is_file()
        and ((tokenizer / "tokenizer.json").is_file() or (tokenizer / "vocab.json").is_file())
        and all(has_weights(part) for part in ("unet", "vae", "text_encoder"))
    )


# -------------------------------------------------------------------------------------------- diffusers folders


def _load_folder(folder: Path, source: str, *, dtype: torch.dtype, prediction_type: str | None) -> BaseModel:
    index = _read_json(folder / "model_index.json")
    if "text_encoder_2" in index or str(index.get("_class_name", "")).startswith("StableDiffusionXL"):
        raise ModelLoadError(
            f"'{source}' is a Stable Diffusion XL pipeline; only SD 1.x and 2.x bases are supported"
        )
    for part in ("unet/config.json", "vae", "text_encoder", "tokenizer", "scheduler/scheduler_config.json"):
        if not (folder / part).exists():
            raise ModelLoadError(
                f"'{source}' lacks {part}; a Stable Diffusion folder needs unet/, vae/, text_encoder/, tokenizer/ "
                "and scheduler/ (pass a complete diffusers folder)"
            )
    unet_class = _read_json(folder / "unet" / "config.json").get("_class_name", "UNet2DConditionModel")
    if unet_class not in ("UNet2DConditionModel", "UNet3DConditionModel"):
        raise ModelLoadError(
            f"the unet of '{source}' is a {unet_class}, not a UNet2DConditionModel; only Stable Diffusion "
            "1.x/2.x bases are supported"
        )
    vae = _from_pretrained(AutoencoderKL, folder / "vae", dtype, source)
    text_encoder = _from_pretrained(CLIPTextModel, folder / "text_encoder", dtype, source)
    tokenizer = _load_tokenizer(folder / "tokenizer", text_encoder.config)
    scheduler_config = _scheduler_config(folder / "scheduler" / "scheduler_config.json", prediction_type)
    if unet_class == "UNet3DConditionModel":
        # saved by the Tune-A-Video reference implementation: the caller converts its unet
        return BaseModel(vae, text_encoder, tokenizer, None, scheduler_config, source, folder / "unet")
    unet = _from_pretrained(UNet2DConditionModel, folder / "unet", dtype, source)
    return BaseModel(vae, text_encoder, tokenizer, unet, scheduler_config, source)


def _from_pretrained(cls: type, folder: Path, dtype: torch.dtype, source: str) -> torch.nn.Module:
    """``cls.from_pretrained`` of one local component folder, made strict."""
    what = f"{folder.name} of '{source}'"
    kwargs: dict[str, Any] = {"dtype": dtype, "output_loading_info": True, "local_files_only": True}
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ModelLoadError(f"the {what} has no weights (*.safetensors or *.bin); pass a complete diffusers folder")
    if any(folder.glob("*.fp16.*")) and not any(
        p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and ".fp16." not in p.name
    ):
        kwargs["variant"] = "fp16"
    try:
        with _quiet_libraries():
            model, info = cls.from_pretrained(folder, **kwargs)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise ModelLoadError(f"could not load the {what}: {_first_line(e)}") from e
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing {_names(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected {_names(info['unexpected_keys'])}")
    if info.get("mismatched_keys"):
        problems.append(f"wrong shape {_names(m[0] for m in info['mismatched_keys'])}")
    if info.get("error_msgs"):
        problems.append(_first_line(info["error_msgs"][0]))
    if problems:
        raise ModelLoadError(
            f"the weights of the {what} do not match its config.json: {'; '.join(problems)}; "
            "re-save the pipeline or pass a complete, unmodified diffusers folder"
        )
    _own_memory(model)
    return model.eval()


@contextmanager
def _quiet_libraries():
    """Silence the libraries' own load reports while we check missing/unexpected keys ourselves."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    saved = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity(diffusers_logging.ERROR)
    transformers_logging.set_verbosity(transformers_logging.ERROR)
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(saved[0])
        transformers_logging.set_verbosity(saved[1])


def _own_memory(model: torch.nn.Module) -> None:
    """Copy weights that alias a memory-mapped file into fresh (aligned) memory.

    Tensors read from a mapped safetensors file can sit at unaligned addresses, which changes the CPU kernels'
    summation order: the same weights then give outputs that differ in the last bits from the same weights in
    ordinary memory. Owning the memory also decouples the model from the file.
    """
    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if param.device.type == "meta":
                    raise ModelLoadError(f"internal error: {type(model).__name__} parameter {name} was not loaded")
                param.data = param.data.clone(memory_format=torch.contiguous_format)
            for name, buf in module.named_buffers(recurse=False):
                if buf is not None:
                    module._buffers[name] = buf.clone(memory_format=torch.contiguous_format)


# ------------------------------------------------------------------------------------------------- shared parts


def _load_tokenizer(folder: Path, text_config: CLIPTextConfig) -> CLIPTokenizer:
    if not folder.is_dir():
        raise ModelLoadError(f"no tokenizer folder at '{folder}'; a Stable Diffusion folder needs tokenizer/")
    has_vocab = (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    )
    try:
        if has_vocab:
            tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        else:
            # SD 1.x and 2.x share CLIP's BPE vocabulary; the shipped configs/sd21 stores only its
            # tokenizer_config.json and takes vocab.json/merges.txt from configs/sd15
            settings = _read_json(folder / "tokenizer_config.json")
            overrides = {
                k: v["content"] if isinstance(v, dict) else v
                for k, v in settings.items()
                if k in ("bos_token", "eos_token", "pad_token", "unk_token", "model_max_length", "do_lower_case")
            }
            shared = CONFIGS_DIR / "sd15" / "tokenizer"
            tokenizer = CLIPTokenizer.from_pretrained(shared, local_files_only=True, **overrides)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the tokenizer from '{folder}': {_first_line(e)}") from e
    if len(tokenizer) > text_config.vocab_size:
        raise ModelLoadError(
            f"the tokenizer in '{folder}' has {len(tokenizer)} tokens but the text encoder embeds only "
            f"{text_config.vocab_size}; pass a tokenizer that belongs to this text encoder"
        )
    return tokenizer


def _scheduler_config(path: Path, prediction_type: str | None) -> dict:
    config = _read_json(path)
    if prediction_type is not None:
        config["prediction_type"] = prediction_type
    return config


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise ModelLoadError(f"missing file '{path}'; pass a complete diffusers folder") from e
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not read '{path}': {_first_line(e)}; fix or replace the file") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"'{path}' does not hold a JSON object; fix or replace the file")
    return data


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(error: object, prefer: str | None = None) -> str:
    """One line of an error's text: the first, or the first containing ``prefer``; without terminal colours."""
    lines = [line.strip() for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    chosen = [line for line in lines if prefer and prefer in line] or lines
    return chosen[0] if chosen else type(error).__name__


def _names(keys: Iterable[str], limit: int = _MAX_NAMED) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


# ------------------------------------------------------------------------------------------ single checkpoints


def _load_single_file(
    path: Path, source: str, *, dtype: torch.dtype, config: str | os.PathLike | None, prediction_type: str | None
) -> BaseModel:
    checkpoint, global_step = _read_checkpoint(path)
    if config is None:
        version = detect_sd_version(checkpoint)
        config_dir = CONFIGS_DIR / version
        described_by = f"the shipped {_VERSION_NAMES[version]} config"
    else:
        version = None
        config_dir = _config_folder(config)
        described_by = f"config '{config}'"

    try:
        unet_config = dict(UNet2DConditionModel.load_config(config_dir / "unet", local_files_only=True))
        vae_config = dict(AutoencoderKL.load_config(config_dir / "vae", local_files_only=True))
        text_config = CLIPTextConfig.from_pretrained(config_dir / "text_encoder", local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not read the configs in '{config_dir}': {_first_line(e)}; fix the folder") from e
    scheduler_config = _scheduler_config(config_dir / "scheduler" / "scheduler_config.json", prediction_type)
    if version == "sd21" and prediction_type is None:
        if global_step == _SD2_BASE_GLOBAL_STEP:
            scheduler_config["prediction_type"] = "epsilon"
        else:
            logger.warning(
                "%s: taking this SD 2.x checkpoint for the 768-px v-prediction model; pass "
                "prediction_type='epsilon' for a 512-px SD 2.x-base model",
                path.name,
            )

    parts = _split_checkpoint(checkpoint, text_config, path.name)
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    unet = _build(
        "UNet",
        lambda: UNet2DConditionModel.from_config(unet_config),
        parts["unet"],
        lambda sd, model: convert_ldm_unet_checkpoint(sd, unet_config),
        dtype,
        path.name,
        described_by,
    )
    vae = _build(
        "VAE",
        lambda: AutoencoderKL.from_config(vae_config),
        parts["vae"],
        lambda sd, model: convert_ldm_vae_checkpoint(sd, vae_config),
        dtype,
        path.name,
        described_by,
    )
    if parts["text_kind"] == "clip":
        convert_text = lambda sd, model: _flatten_text_keys(convert_ldm_clip_checkpoint(sd), model)  # noqa: E731
    else:
        convert_text = lambda sd, model: _flatten_text_keys(  # noqa: E731
            convert_open_clip_checkpoint(model, sd, prefix=OPEN_CLIP_PREFIX), model
        )
    text_encoder = _build(
        "text encoder",
        lambda: CLIPTextModel(text_config),
        parts["text_encoder"],
        convert_text,
        dtype,
        path.name,
        described_by,
    )
    tokenizer = _load_tokenizer(config_dir / "tokenizer", text_config)
    return BaseModel(vae, text_encoder, tokenizer, unet, scheduler_config, source)


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], int | None]:
    """The tensors of a single-file checkpoint (unwrapping Lightning's ``state_dict``) and its global step."""
    global_step = None
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt file or a pickle that needs more than tensors: both unreadable, say why
        raise ModelLoadError(
            f"could not read '{path}' ({type(e).__name__}: {_first_line(e, prefer='Unsupported global')}); "
            + (
                "it is not a valid .safetensors file: re-download or re-export it"
                if path.suffix.lower() == ".safetensors"
                else "pickled checkpoints are read with torch.load(weights_only=True) and must hold only tensors: "
                "use the model's .safetensors (or a pruned .ckpt)"
            )
        ) from e
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        if isinstance(data.get("global_step"), int):
            global_step = data["global_step"]
        data = data["state_dict"]
    if not isinstance(data, dict) or not data:
        raise ModelLoadError(f"'{path}' holds no state dict of tensors; pass a Stable Diffusion checkpoint")
    not_tensors = [k for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ModelLoadError(
            f"'{path}' has entries that are not tensors ({_names(map(str, not_tensors))}); pass a plain "
            "Stable Diffusion state dict"
        )
    return data, global_step


def _config_folder(config: str | os.PathLike) -> Path:
    folder = Path(config).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(
            f"config folder '{config}' does not exist; pass a diffusers-format folder with unet/, vae/, "
            "text_encoder/, tokenizer/ and scheduler/ configs, or leave config unset"
        )
    needed = ("unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/tokenizer_config.json",
              "scheduler/scheduler_config.json")
    missing = [p for p in needed if not (folder / p).is_file()]
    if missing:
        raise ModelLoadError(
            f"config folder '{config}' lacks {', '.join(missing)}; pass a diffusers-format folder with unet/, "
            "vae/, text_encoder/, tokenizer/ and scheduler/ configs"
        )
    return folder


def _split_checkpoint(checkpoint: dict[str, torch.Tensor], text_config: CLIPTextConfig, name: str) -> dict:
    """Sort the keys into UNet / VAE / text encoder; drop the known non-weights; refuse anything else."""
    unused_block = f"{OPEN_CLIP_PREFIX}transformer.resblocks.{text_config.num_hidden_layers}."
    ignored = {
        f"{CLIP_PREFIX}text_model.embeddings.position_ids",
        f"{CLIP_PREFIX}embeddings.position_ids",
        f"{OPEN_CLIP_PREFIX}text_projection",
        f"{OPEN_CLIP_PREFIX}logit_scale",
    }
    parts: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "vae": {}, "clip": {}, "open_clip": {}}
    unknown, skipped = [], 0
    for key, value in checkpoint.items():
        if key in _SCHEDULE_BUFFERS or key.startswith("model_ema.") or key in ignored or key.startswith(unused_block):
            skipped += 1
        elif key.startswith(UNET_PREFIX):
            parts["unet"][key] = value
        elif key.startswith(VAE_PREFIX):
            parts["vae"][key] = value
        elif key.startswith(CLIP_PREFIX):
            parts["clip"][key] = value
        elif key.startswith(OPEN_CLIP_PREFIX):
            parts["open_clip"][key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ModelLoadError(
            f"{name} has key(s) that are not part of a Stable Diffusion 1.x/2.x UNet, VAE or text encoder: "
            f"{_names(unknown)}; pass an SD 1.x/2.x checkpoint in the original layout (or remove those keys)"
        )
    logger.debug("%s: skipped %d entries that are not model weights", name, skipped)
    if parts["clip"] and parts["open_clip"]:
        raise ModelLoadError(
            f"{name} holds two text encoders ({CLIP_PREFIX}* and {OPEN_CLIP_PREFIX}*); pass a plain SD 1.x/2.x "
            "checkpoint"
        )
    for part, what, prefix in (("unet", "UNet", UNET_PREFIX), ("vae", "VAE", VAE_PREFIX)):
        if not parts[part]:
            raise ModelLoadError(
                f"{name} has no {what} weights ({prefix}* keys); pass a full Stable Diffusion checkpoint "
                "(UNet, VAE and text encoder)"
            )
    if not parts["clip"] and not parts["open_clip"]:
        raise ModelLoadError(
            f"{name} has no text encoder weights ({CLIP_PREFIX}* or {OPEN_CLIP_PREFIX}* keys); pass a full Stable "
            "Diffusion checkpoint (UNet, VAE and text encoder)"
        )
    text_kind = "clip" if parts["clip"] else "open_clip"
    return {"unet": parts["unet"], "vae": parts["vae"], "text_encoder": parts[text_kind], "text_kind": text_kind}


def _flatten_text_keys(state_dict: dict, model: torch.nn.Module) -> dict:
    """diffusers' CLIP converters emit ``text_model.*`` keys; transformers >= 5.6 flattened CLIPTextModel."""
    if hasattr(model, "text_model"):
        return state_dict
    return {k.removeprefix("text_model."): v for k, v in state_dict.items()}


class _Traced(torch.Tensor):
    """A data-less (meta) tensor that remembers which checkpoint keys it was computed from.

    diffusers' conversion functions rename, reshape, transpose and split tensors, and drop whatever they do
    not recognise without a word. Running them once on traced stand-ins tells, for every converted weight,
    the original key(s) it came from, and which original keys were never used.
    """

    sources: frozenset = frozenset()

    @staticmethod
    def of(key: str, tensor: torch.Tensor) -> _Traced:
        traced = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta").as_subclass(_Traced)
        traced.sources = frozenset((key,))
        return traced

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        sources: set[str] = set()
        for value in _walk((args, kwargs)):
            if isinstance(value, _Traced):
                sources |= value.sources
        result = super().__torch_function__(func, types, args, kwargs)
        for value in _walk(result):
            if isinstance(value, _Traced):
                value.sources = frozenset(sources) | value.sources
        return result


def _walk(value: Any):
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    else:
        yield value


def _build(
    what: str,
    make: Callable[[], torch.nn.Module],
    originals: dict[str, torch.Tensor],
    convert: Callable[[dict, torch.nn.Module], dict],
    dtype: torch.dtype,
    name: str,
    described_by: str,
) -> torch.nn.Module:
    """Build one component from its original-layout weights with diffusers' converter, strictly."""
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on the meta device; non-persistent buffers (position_ids) real
        model = make()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    # 1. dry run on traced stand-ins: which original key became which weight
    traced = _run_converter(convert, {k: _Traced.of(k, v) for k, v in originals.items()}, model, what, name)
    traced = {k: v for k, v in traced.items() if v is not None}  # the converters .get() absent partner keys
    used = set().union(*(v.sources for v in traced.values())) if traced else set()
    unused = [k for k in originals if k not in used]
    unexpected = unused + [s for k, v in traced.items() if k not in expected for s in sorted(v.sources)]
    missing = [k for k in expected if k not in traced]
    mismatched = [k for k, v in traced.items() if k in expected and tuple(v.shape) != expected[k]]
    if unexpected or missing or mismatched:
        module_sources = {}  # diffusers module -> original module, from weights whose leaf name is unchanged
        for k, v in traced.items():
            if len(v.sources) == 1:
                (source,) = v.sources
                module, _, leaf = k.rpartition(".")
                source_module, _, source_leaf = source.rpartition(".")
                if leaf == source_leaf:
                    module_sources[module] = source_module

        def original_name(key: str) -> str:
            module, _, leaf = key.rpartition(".")
            guess = f"{module_sources[module]}.{leaf}" if module in module_sources else None
            return guess if guess and guess not in originals else f"{key} (diffusers name)"

        problems = []
        if missing:
            problems.append(f"missing {_names(original_name(k) for k in missing)}")
        if unexpected:
            problems.append(f"unexpected {_names(dict.fromkeys(unexpected))}")
        if mismatched:
            shown = [
                f"{'+'.join(sorted(traced[k].sources))} {tuple(traced[k].shape)} vs {expected[k]}" for k in mismatched
            ]
            problems.append(f"wrong shape {_names(shown)}")
        raise ModelLoadError(
            f"{name}: the {what} weights do not match {described_by}: {'; '.join(problems)}; pass an unmodified "
            "SD 1.x/2.x checkpoint, or config= a diffusers config folder that describes this one"
        )

    # 2. the real conversion, into fresh memory of the requested dtype
    converted = _run_converter(convert, originals, model, what, name)
    state = {}
    for key in expected:
        value = converted[key]
        target = dtype if value.is_floating_point() else value.dtype
        state[key] = torch.empty(value.shape, dtype=target).copy_(value)
    model.load_state_dict(state, strict=True, assign=True)
    for pname, param in model.named_parameters():
        if param.device.type == "meta":  # pragma: no cover - guarded by the checks above
            raise ModelLoadError(f"internal error: {what} parameter {pname} was not loaded from {name}")
    return model.eval()


def _run_converter(convert, state_dict, model, what: str, name: str) -> dict:
    try:
        return convert(state_dict, model)
    except KeyError as e:  # a converter indexing a partner key the checkpoint lacks
        key = str(e.args[0]) if e.args else "?"
        prefix = {"UNet": UNET_PREFIX, "VAE": VAE_PREFIX}.get(what, "")
        full = key if key.startswith(prefix) or any(k == key for k in state_dict) else prefix + key
        raise ModelLoadError(
            f"{name}: the {what} weights are incomplete: missing {full}; pass an unmodified SD 1.x/2.x checkpoint"
        ) from e
    except (RuntimeError, ValueError, IndexError, TypeError, AttributeError) as e:
        raise ModelLoadError(
            f"{name}: could not convert the {what} weights ({type(e).__name__}: {_first_line(e)}); pass an SD "
            "1.x/2.x checkpoint in the original layout, or config= a diffusers config folder that describes it"
        ) from e
