"""What a run folder holds, defined once: its file names, atomic writes, checkpoints and the inversion cache.

Tuning writes a run folder, editing reads it (and adds to its inversion cache), the demo and the command line
name its files; each takes the names and the readers and writers from here::

    RUN_DIR/config.yaml            the full RunConfig
    RUN_DIR/source.mp4             the sampled source frames at the tuned size (to look at: lossy)
    RUN_DIR/adapter.safetensors    the trained tensors only, with metadata
    RUN_DIR/inversion.safetensors  the source latents tuning used (VAE posterior mean) and their DDIM
                                   inversion with the tuning base (empty prompt)
    RUN_DIR/inversions/KEY-N.safetensors  inversions with another base (KEY) or step count (N), made by edit
    RUN_DIR/inversions/KEY-N-FRAMES.safetensors  inversions of other frames of the source video, or in windows
                                   (FRAMES: fS-K-C[-wW-oO], see frames_key), made by edit --num-frames/--all-frames
    RUN_DIR/inversions/prompt-FRAMES.safetensors  the same as prompt-inversion.safetensors for those frames
    RUN_DIR/prompt-inversion.safetensors  the DDIM inversion with the source prompt, and its null-text
                                   embeddings (one per sampling step), made by edit --inversion null-text
                                   or negative-prompt; replaced when the steps, guidance or base change
    RUN_DIR/train.log              one JSON line per step: step, loss, seconds
    RUN_DIR/tune.json              seconds and peak memory of the tuning call that finished the run (tuneavideo.meter)
    RUN_DIR/checkpoints/step-N.pt  the latest training state, for --resume
    RUN_DIR/samples/step-N/        validation videos, when asked for
    RUN_DIR/edits/                 edited videos, unless edit is given another --output; each edit's JSON has its
                                   parameters, and the seconds and peak memory of its sampling
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import TuneAVideoError

CONFIG = "config.yaml"
SOURCE = "source.mp4"
ADAPTER = "adapter.safetensors"
INVERSION = "inversion.safetensors"
INVERSIONS = "inversions"
PROMPT_INVERSION = "prompt-inversion.safetensors"
LOG = "train.log"
TUNE_RECORD = "tune.json"
# A batch folder (tuneavideo.batch) holds one run folder per job, OUTPUT/NAME, and OUTPUT/.attempts/NAME.json: how
# many processes started the job in the latest batch (more than one: a worker died); outside the run folder, which
# tune wants new or empty
ATTEMPTS = ".attempts"
CHECKPOINTS = "checkpoints"
SAMPLES = "samples"
EDITS = "edits"

_CHECKPOINT_NAME = re.compile(r"step-(\d+)\.pt")


class RunError(TuneAVideoError):
    """A run folder that cannot be used as asked."""


# ---------------------------------------------------------------------------------------------- atomic writes


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it to ``path``: an interruption never leaves a
    partial file, and a failed write (a full disk) leaves no temporary file behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_json(path: Path, data: dict) -> None:
    atomic_text(path, json.dumps(data, indent=2) + "\n")


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Save ``tensors`` (moved to the CPU) as safetensors with ``metadata``, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


# ------------------------------------------------------------------------------------------------ checkpoints


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's ``checkpoints/step-N.pt``, oldest first; other names there are not ours and are left alone."""
    found = [p for p in (Path(run_dir) / CHECKPOINTS).glob("step-*.pt") if _CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def checkpoint_step(path: Path) -> int:
    """The step count in a checkpoint's name ``step-N.pt``."""
    return int(_CHECKPOINT_NAME.fullmatch(Path(path).name).group(1))


def save_checkpoint(run_dir: Path, step: int, state: dict) -> Path:
    """Write ``checkpoints/step-N.pt`` atomically, then remove the older ones; returns its path."""
    folder = Path(run_dir) / CHECKPOINTS
    folder.mkdir(exist_ok=True)
    path = folder / f"step-{step}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in checkpoints(run_dir):
        if old != path:
            old.unlink()
    return path


CHECKPOINT_KEYS = frozenset({"step", "trainable", "optimizer", "scaler", "generator"})


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's training state (on the CPU), checked to hold what tuning writes."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, or not a checkpoint: torch raises several types
        raise RunError(f"checkpoint {path} is damaged ({first_line(error)}); delete the run folder and tune again") from None
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= set(state):
        raise RunError(f"{path} is not a tuneavideo checkpoint; delete it, or the run folder, and tune again")
    return state


# ------------------------------------------------------------------------------------------- inversion cache


def fingerprint(modules: Iterable[torch.nn.Module | None], extra: object = None, per_tensor: int = 256) -> str:
    """A short key of a base model's identity: a hash of every parameter's name and shape and of up to ``per_tensor``
    evenly spaced values of it (as float32), and of ``extra`` (JSON). Two bases that differ anywhere a fine-tune
    changes weights (a DreamBooth model, another SD version) get different keys; it reads a few hundred thousand
    numbers, not the whole model. A base loaded in another dtype gets another key (its inversion differs too)."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for index, module in enumerate(modules):
        if module is None:
            continue
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            picked = flat[:: max(1, flat.numel() // per_tensor)][:per_tensor]
            digest.update(f"{index}.{name}{tuple(tensor.shape)}".encode())
            digest.update(picked.to(device="cpu", dtype=torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class InversionFile:
    """What an inversion file holds: DDIM-inverted latents ``(1, c, f, h, w)`` with the base ``base_key`` in
    ``steps`` steps, and (in the run's own ``inversion.safetensors``) the source latents they came from."""

    path: Path
    latents: torch.Tensor
    steps: int
    base_key: str | None  # None in files written before the key was kept
    source_latents: torch.Tensor | None = None
    vae_key: str | None = None  # the VAE that encoded source_latents


def frames_key(start: int, stride: int, num_frames: int, window: int | None = None, overlap: int | None = None) -> str:
    """The part of a cache entry's name that says which frames it inverted, when they are not the tuned clip run whole:
    ``fS-K-C``, the ``C`` frames ``S, S + K, ...`` of the run's source video, then ``-wW-oO`` when the model ran in
    windows of ``W`` frames sharing ``O`` (:mod:`tuneavideo.windows`)."""
    key = f"f{start}-{stride}-{num_frames}"
    return key + (f"-w{window}-o{overlap}" if window is not None else "")


def write_inversion(run_dir: Path, latents: torch.Tensor, *, steps: int, base_key: str, base_model: str,
                    source_latents: torch.Tensor | None = None, vae_key: str | None = None, frames: str = "") -> Path:
    """Save an inversion: the run's own ``inversion.safetensors`` when ``source_latents`` are given (tuning), else a
    cache entry ``inversions/KEY-N[-FRAMES].safetensors`` for another base, step count or frames (editing; ``frames``
    from :func:`frames_key`, empty for the tuned clip)."""
    tensors = {"latents": latents}
    metadata = {"num_inversion_steps": str(steps), "prompt": "", "base_key": base_key, "base_model": base_model,
                "frames": frames}
    if source_latents is not None:
        tensors["source_latents"] = source_latents
        metadata["vae_key"] = vae_key or ""
        path = Path(run_dir) / INVERSION
    else:
        path = _cache_path(run_dir, base_key, steps, frames)
        path.parent.mkdir(exist_ok=True)
    atomic_save_tensors(tensors, path, metadata)
    return path


def read_inversion(path: Path, num_frames: int) -> InversionFile:
    """An inversion file, checked to hold finite latents of ``num_frames`` frames; :class:`RunError` if damaged."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            latents = f.get_tensor("latents")
            source = f.get_tensor("source_latents") if "source_latents" in f.keys() else None
            steps = int(metadata["num_inversion_steps"])
    except Exception as error:  # truncated or random bytes: safetensors raises its own error types
        raise RunError(f"{path} is damaged ({first_line(error)}); delete it: edit then inverts {SOURCE} again") from None
    for tensor in (latents, source):
        if tensor is not None and (tensor.ndim != 5 or tensor.shape[2] != num_frames or not tensor.isfinite().all()):
            raise RunError(f"{path} does not hold this run's inverted latents; delete it: edit then inverts {SOURCE} again")
    return InversionFile(path, latents, steps, metadata.get("base_key") or None, source, metadata.get("vae_key") or None)


def find_inversion(run_dir: Path, base_key: str, steps: int, num_frames: int, *, frames: str = "",
                   legacy: bool = False) -> InversionFile | None:
    """The run's inversion with base ``base_key`` in ``steps`` steps of the frames ``frames`` (:func:`frames_key`;
    empty: the tuned clip), if one was saved. ``legacy``: a run's own ``inversion.safetensors`` written without a base
    key counts as the base's (true when the edit uses the run's own base model)."""
    own = Path(run_dir) / INVERSION
    if own.is_file() and not frames:
        found = read_inversion(own, num_frames)
        if found.steps == steps and (found.base_key == base_key or (found.base_key is None and legacy)):
            return found
    cached = _cache_path(run_dir, base_key, steps, frames)
    return read_inversion(cached, num_frames) if cached.is_file() else None


@dataclass
class PromptInversionFile:
    """The inversion with the source prompt (negative-prompt and null-text inversion): latents ``(1, c, f, h, w)``
    after ``steps`` DDIM steps with base ``base_key``, and, for null-text inversion, the optimised unconditional
    embeddings ``(steps, 1, l, d)`` for guidance ``guidance_scale``; of the frames ``frames`` (:func:`frames_key`;
    empty: the tuned clip)."""

    latents: torch.Tensor
    steps: int
    base_key: str
    prompt: str
    null_embeddings: torch.Tensor | None = None
    guidance_scale: float | None = None
    frames: str = ""


def prompt_inversion_path(run_dir: Path, frames: str = "") -> Path:
    """``RUN_DIR/prompt-inversion.safetensors`` for the tuned clip, ``RUN_DIR/inversions/prompt-FRAMES.safetensors``
    for other frames (``frames`` from :func:`frames_key`)."""
    return Path(run_dir) / (f"{INVERSIONS}/prompt-{frames}.safetensors" if frames else PROMPT_INVERSION)


def write_prompt_inversion(run_dir: Path, found: PromptInversionFile) -> Path:
    """Save a prompt inversion at the path of its frames (:func:`prompt_inversion_path`) atomically (one per run and
    frames: a new one replaces the old)."""
    tensors = {"latents": found.latents}
    metadata = {"num_inversion_steps": str(found.steps), "base_key": found.base_key, "prompt": found.prompt}
    if found.null_embeddings is not None:
        tensors["null_embeddings"] = found.null_embeddings
        metadata["guidance_scale"] = repr(float(found.guidance_scale))
    path = prompt_inversion_path(run_dir, found.frames)
    path.parent.mkdir(exist_ok=True)
    atomic_save_tensors(tensors, path, metadata)
    return path


def read_prompt_inversion(run_dir: Path, num_frames: int, frames: str = "") -> PromptInversionFile | None:
    """The run's prompt inversion of ``frames`` (:func:`prompt_inversion_path`), or None when there is none;
    :class:`RunError` if damaged."""
    path = prompt_inversion_path(run_dir, frames)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            latents = f.get_tensor("latents")
            null = f.get_tensor("null_embeddings") if "null_embeddings" in f.keys() else None
            found = PromptInversionFile(latents, int(metadata["num_inversion_steps"]), metadata["base_key"], metadata["prompt"],
                                        null, float(metadata["guidance_scale"]) if null is not None else None, frames)
    except Exception as error:  # truncated or random bytes: safetensors raises its own error types
        raise RunError(f"{path} is damaged ({first_line(error)}); delete it: edit then inverts {SOURCE} again") from None
    if latents.ndim != 5 or latents.shape[2] != num_frames or not latents.isfinite().all() or (
            null is not None and (null.ndim != 4 or null.shape[0] != found.steps or not null.isfinite().all())):
        raise RunError(f"{path} does not hold this run's inversion; delete it: edit then inverts {SOURCE} again")
    return found


def _cache_path(run_dir: Path, base_key: str, steps: int, frames: str = "") -> Path:
    return Path(run_dir) / INVERSIONS / (f"{base_key}-{steps}-{frames}.safetensors" if frames else f"{base_key}-{steps}.safetensors")


def first_line(error: BaseException) -> str:
    """An exception's first line, short enough for a one-line error message."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:120]


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe short form of a prompt (the names of edits and validation samples)."""
    kept = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(part for part in kept.split("-") if part)[:limit] or "prompt"
