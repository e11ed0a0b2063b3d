"""The tuned tensors alone, as a safetensors file that applies to any base of the same architecture."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from . import __version__
from .errors import TuneAVideoError
from .runfolder import atomic_save_tensors

FORMAT = "tuneavideo-adapter/1"


class AdapterError(TuneAVideoError):
    """An adapter file that does not fit the model it is applied to."""


def trainable_names(model: nn.Module, patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Parameters of every module whose name ends with one of ``patterns`` (the reference's rule)."""
    patterns = tuple(patterns)
    names = []
    for module_name, module in model.named_modules():
        if module_name.endswith(patterns):
            names.extend(f"{module_name}.{name}" for name, _ in module.named_parameters())
    return sorted(set(names))


def set_trainable(model: nn.Module, patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Freeze everything, then unfreeze the modules matched by ``patterns``; returns their parameter names."""
    names = trainable_names(model, patterns)
    if not names:
        raise AdapterError(f"no module name ends with any of {list(patterns)}; check trainable_modules")
    wanted = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in wanted)
    return names


def save_adapter(model: nn.Module, names: list[str], path: str | Path, **metadata) -> None:
    """Save the named parameters (float32) with metadata: base model, frames, size, prompt, version."""
    params = dict(model.named_parameters())
    tensors = {name: params[name].float() for name in names}
    meta = {"format": FORMAT, "tuneavideo_version": __version__}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    atomic_save_tensors(tensors, Path(path), meta)


def read_adapter_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


@torch.no_grad()
def load_adapter(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Set ``model``'s parameters to an adapter's tensors (cast to each parameter's dtype and device); every key must
    exist with the same shape. The parameters get memory of their own: weights they shared are not written into."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"adapter {path} does not exist; tune first or check the run folder")
    params = dict(model.named_parameters())
    try:
        return _copy_adapter(path, params)
    except AdapterError:
        raise
    except Exception as error:  # a truncated or foreign file: safetensors raises its own error types
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        raise AdapterError(f"adapter {path} is damaged ({reason}); tune the run again") from None


def _copy_adapter(path: Path, params: dict[str, nn.Parameter]) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        keys = list(f.keys())
        unknown = [k for k in keys if k not in params]
        wrong = [k for k in keys if k in params and tuple(f.get_slice(k).get_shape()) != tuple(params[k].shape)]
        if unknown or wrong:
            key = (unknown or wrong)[0]
            detail = "is not in this model" if unknown else (
                f"has shape {tuple(f.get_slice(key).get_shape())} in the adapter, {tuple(params[key].shape)} here"
            )
            base = metadata.get("base_model", "its base model")
            raise AdapterError(
                f"adapter {path} was trained for another architecture ({len(unknown) + len(wrong)} tensors do not fit; "
                f"{key} {detail}); use a base of the same Stable Diffusion version as {base}"
            )
        tensors = {key: f.get_tensor(key) for key in keys}
    bad = [key for key, tensor in tensors.items() if not tensor.isfinite().all()]
    if bad:
        raise AdapterError(f"adapter {path} holds NaN or infinite values ({len(bad)} tensors, e.g. {bad[0]}): its tuning "
                           "diverged; tune again with a lower learning rate")
    for key, tensor in tensors.items():
        # new memory, not copy_: an inflated UNet shares the image UNet's weights, which must stay as they were
        params[key].data = tensor.to(device=params[key].device, dtype=params[key].dtype)
    return metadata
