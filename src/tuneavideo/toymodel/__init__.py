"""The toy text-to-image model ("toy-sd"): a small latent diffusion model in Stable Diffusion's exact
diffusers layout, trained on :mod:`tuneavideo.toyworld`, so that the project runs end to end without
downloading Stable Diffusion.

* :func:`bundled_model_dir` -- the shipped pipeline folder (``tuneavideo/assets/toy-sd``); load it with
  ``StableDiffusionPipeline.from_pretrained`` or :func:`tuneavideo.loading.load_base`.
* :func:`tuneavideo.toymodel.pretrain.pretrain` -- train one (``python -m tuneavideo.toymodel.pretrain``).
* :func:`tuneavideo.toymodel.evaluate.evaluate_model` -- measure one with the toy world's detector.
* :data:`HELD_OUT` -- the (colour, shape, background) combinations kept out of training.

``import tuneavideo.toymodel`` does not import torch.
"""

from __future__ import annotations

from pathlib import Path

from .data import HELD_OUT

__all__ = ["HELD_OUT", "bundled_model_dir"]


def bundled_model_dir() -> Path:
    """The folder of the shipped toy model (a diffusers Stable Diffusion pipeline folder)."""
    return Path(__file__).resolve().parents[1] / "assets" / "toy-sd"
