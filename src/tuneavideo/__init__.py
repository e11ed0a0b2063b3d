"""Tune-A-Video: one-shot tuning of image diffusion models for text-driven video editing.

The public API is imported lazily, so ``import tuneavideo`` is cheap::

    from tuneavideo import RunConfig, tune, load_run, edit
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "RunConfig": "config",
    "VideoConfig": "config",
    "TuneConfig": "config",
    "SampleConfig": "config",
    "load_base": "loading",
    "BaseModel": "loading",
    "tune": "tuning",
    "load_run": "editing",
    "edit": "editing",
    "ddim_invert": "inversion",
    "TuneAVideoPipeline": "pipeline",
    "TuneAVideoUNet": "models",
    "read_video": "video",
    "write_video": "video",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'tuneavideo' has no attribute {name!r}")
