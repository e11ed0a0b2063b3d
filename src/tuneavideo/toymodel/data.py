"""Training data of the toy text-to-image model: rendered scenes, random captions, held-out combinations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..toyworld.render import (
    BACKGROUNDS,
    CAPTION_TEMPLATES,
    CLIP_CAPTION_TEMPLATES,
    COLOURS,
    PATHS,
    SHAPES,
    SIZES,
    Scene,
    fill_template,
    random_scene,
    render_background,
    render_scene,
)

#: (colour, shape, background) triples that are never rendered during training (neither for the VAE nor
#: for the UNet), to measure how well the model composes attributes it has only seen apart. Balanced:
#: every colour and background appears twice, every shape three times, and no (colour, shape),
#: (colour, background) or (shape, background) pair repeats, so each pair is still seen in training
#: with other third attributes.
HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("red", "circle", "green grass"),
    ("green", "square", "blue sky"),
    ("blue", "triangle", "white snow"),
    ("yellow", "cross", "sandy beach"),
    ("purple", "circle", "grey road"),
    ("orange", "square", "black night"),
    ("red", "triangle", "blue sky"),
    ("green", "cross", "white snow"),
    ("blue", "circle", "sandy beach"),
    ("yellow", "square", "grey road"),
    ("purple", "triangle", "black night"),
    ("orange", "cross", "green grass"),
)

_HELD_OUT_SET = frozenset(HELD_OUT)

# index tables for compact attribute arrays
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)
PATH_NAMES: tuple[str, ...] = tuple(PATHS)


def is_held_out(colour: str, shape: str, background: str) -> bool:
    """Whether a (colour, shape, background) combination is in :data:`HELD_OUT`."""
    return (colour, shape, background) in _HELD_OUT_SET


def training_scene(rng: np.random.Generator) -> Scene:
    """A uniformly random scene whose (colour, shape, background) is not held out."""
    while True:
        scene = random_scene(rng)
        if not is_held_out(scene.colour, scene.shape, scene.background):
            return scene


def scene_attributes(scene: Scene) -> tuple[int, int, int, int]:
    """``(shape, colour, size, background)`` indices of a scene."""
    return (
        SHAPE_NAMES.index(scene.shape),
        COLOUR_NAMES.index(scene.colour),
        SIZE_NAMES.index(scene.size),
        BACKGROUND_NAMES.index(scene.background),
    )


def random_caption(
    attributes: Sequence[int], rng: np.random.Generator, clip_probability: float = 0.3, dropout: float = 0.1
) -> str:
    """A random caption of a scene given by its attribute indices.

    With probability ``dropout`` the empty caption ``""`` (what classifier-free guidance uses as the
    unconditional prompt); otherwise a random still-scene template, or, with probability
    ``clip_probability``, a random clip template with a random motion phrase (so that the clip captions
    Tune-A-Video is tuned with are familiar to the text encoder; a still image carries no motion, the
    model learns to ignore those words).
    """
    u = rng.random(3)
    if u[0] < dropout:
        return ""
    shape, colour, size, background = (
        SHAPE_NAMES[attributes[0]],
        COLOUR_NAMES[attributes[1]],
        SIZE_NAMES[attributes[2]],
        BACKGROUND_NAMES[attributes[3]],
    )
    if u[1] < clip_probability:
        template = CLIP_CAPTION_TEMPLATES[int(rng.integers(len(CLIP_CAPTION_TEMPLATES)))]
        motion = PATHS[PATH_NAMES[int(rng.integers(len(PATH_NAMES)))]]
        return fill_template(template, shape=shape, colour=colour, size=size, background=background, motion=motion)
    template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    return fill_template(template, shape=shape, colour=colour, size=size, background=background)


_BACKGROUND_CACHE: dict[tuple[str, int], np.ndarray] = {}


def _background(name: str, size: int) -> np.ndarray:
    key = (name, size)
    if key not in _BACKGROUND_CACHE:
        _BACKGROUND_CACHE[key] = np.clip(np.rint(render_background(name, size)), 0, 255)
    return _BACKGROUND_CACHE[key]


def render_batch(scenes: Sequence[Scene], size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(images, object_masks)``: images ``(n, 3, size, size)`` float32 in ``[-1, 1]`` and masks
    ``(n, 1, size, size)`` float32, 1 on (and one pixel around) the object, 0 elsewhere."""
    images = np.empty((len(scenes), 3, size, size), dtype=np.float32)
    masks = np.empty((len(scenes), 1, size, size), dtype=np.float32)
    for i, scene in enumerate(scenes):
        image = render_scene(scene, size).astype(np.float32)
        diff = np.abs(image - _background(scene.background, size)).max(axis=2) > 4
        grown = diff.copy()
        grown[1:] |= diff[:-1]
        grown[:-1] |= diff[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        images[i] = image.transpose(2, 0, 1) / 127.5 - 1.0
        masks[i, 0] = grown
    return images, masks
