"""Tune-A-Video: one-shot tuning of image diffusion models for text-driven video editing."""

__version__ = "0.1.0"
