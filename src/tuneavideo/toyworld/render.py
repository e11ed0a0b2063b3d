"""Procedural renderer of the toy world: one coloured shape, inside an outline, on a textured background.

The toy world stands in for natural images where Stable Diffusion weights are not
available: a small text-to-image model is trained on these renders and the editing
quality is measured with :mod:`tuneavideo.toyworld.detect`, because here the ground
truth (shape, colour, size, background, position) of every image is known.

Conventions
-----------
* Positions in :class:`Scene` and :class:`Clip` are *normalised*: ``x`` and ``y`` are
  fractions of the frame width and height (0 = left/top edge, 1 = right/bottom edge),
  so the same scene renders at any resolution.
* A position refers to the *area centroid* of the shape (for the triangle that is
  the centre of its circumscribed circle, not the centre of its bounding box).
* Pixel coordinates returned by :func:`object_track` and :func:`scene_centre_px` are
  in pixel-index units: the centre of pixel ``[row j, column i]`` is ``(x=i, y=j)``.
* Images are ``(H, W, 3)`` ``uint8`` arrays (or ``float32`` in ``[0, 1]`` when asked),
  videos ``(F, H, W, 3)``. Rendering is antialiased (4x4 supersampling of the shape's
  coverage) and fully deterministic; randomness only enters through
  :func:`random_scene` / :func:`random_clip`, which take a seed or a
  :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Union

import numpy as np

# --------------------------------------------------------------------------- vocabulary

#: Shapes, chosen to stay distinct at 64x64 and under blur: the fill ratio of the
#: bounding box separates circle / square / cross, and the triangle (apex up) is the
#: only shape whose mass sits below the middle of its bounding box.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

#: Object colours (saturated) -> RGB. Every colour is at least 90 RGB units from every
#: other and at least ~100 units from every colour a background texture uses, so all
#: shape/colour/background combinations are allowed.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "green": (30, 210, 70),
    "blue": (35, 75, 220),
    "yellow": (240, 215, 35),
    "purple": (145, 45, 190),
    "orange": (245, 125, 25),
}

#: Size word -> nominal radius as a fraction of the frame width (8 px and 14 px at 64x64).
SIZES: dict[str, float] = {
    "small": 8 / 64,
    "large": 14 / 64,
}

#: Background name (used verbatim in captions) -> (base RGB, accent RGB). The texture
#: blends the two colours with a smooth pattern (see :func:`render_background`); the
#: backgrounds are muted so that they never clash with an object colour.
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "green grass": ((50, 105, 40), (35, 80, 30)),
    "blue sky": ((120, 170, 230), (185, 215, 242)),
    "white snow": ((238, 240, 245), (212, 218, 230)),
    "sandy beach": ((222, 196, 146), (200, 172, 122)),
    "grey road": ((112, 112, 116), (92, 92, 96)),
    "black night": ((12, 14, 34), (36, 38, 70)),
}

#: Every object is drawn with an outline this wide (a fraction of the frame width: 1.5 px at 64x64), inside the
#: shape's extent, in the colour :data:`OUTLINES` gives for the background. A flat object stands out of its
#: background only through its colour, and then two colours can stand out in opposite directions of a VAE's
#: latents (red and green in the toy VAE), so that a model sampling from one colour's inverted latents finds no
#: object where the other stood; natural objects carry edges and shading that do not change with their colour.
#: The outline is that edge: the same for every colour, contrasting with every background.
OUTLINE_WIDTH: float = 1.5 / 64

_BLACK, _WHITE = (20, 20, 20), (245, 245, 245)

#: Background name -> RGB of the outline of objects on it: black on the light backgrounds, white on the dark ones.
OUTLINES: dict[str, tuple[int, int, int]] = {
    "green grass": _WHITE,
    "blue sky": _BLACK,
    "white snow": _BLACK,
    "sandy beach": _BLACK,
    "grey road": _WHITE,
    "black night": _WHITE,
}

#: Motion path name -> the phrase used in clip captions.
PATHS: dict[str, str] = {
    "right": "moving right",
    "left": "moving left",
    "up": "moving up",
    "down": "moving down",
    "diagonal": "moving diagonally",
    "bouncing": "bouncing",
    "circling": "circling",
}

#: Caption templates for still scenes.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape} on {background}",
    "a {size} {colour} {shape} on {background}",
    "{background} with a {size} {colour} {shape}",
    "{background} with a {colour} {shape}",
)

#: Caption templates for clips; ``{motion}`` is the path phrase from :data:`PATHS`.
CLIP_CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape} {motion} on {background}",
    "a {size} {colour} {shape} {motion} on {background}",
    "{background} with a {colour} {shape} {motion}",
)

#: Empty border kept around objects by the random samplers and the paths (fraction of
#: the frame; 2 px at 64x64), so that the frame border shows only background.
MARGIN: float = 2 / 64

#: Frame counts drawn by :func:`random_clip` (inclusive bounds).
MIN_FRAMES: int = 8
MAX_FRAMES: int = 24

#: How far each shape reaches from its centroid, in units of the nominal radius:
#: (left, right, up, down).
SHAPE_EXTENTS: dict[str, tuple[float, float, float, float]] = {
    "circle": (1.0, 1.0, 1.0, 1.0),
    "square": (0.9, 0.9, 0.9, 0.9),
    "triangle": (1.3 * math.sqrt(3) / 2, 1.3 * math.sqrt(3) / 2, 1.3, 0.65),
    "cross": (1.0, 1.0, 1.0, 1.0),
}

_SQUARE_HALF_SIDE = 0.9  # half side of the square, in nominal radii
_TRIANGLE_CIRCUMRADIUS = 1.3  # equilateral triangle, apex up, in nominal radii
_CROSS_HALF_WIDTH = 0.38  # half width of the cross's arms, in nominal radii
_SUPERSAMPLING = 4  # sub-samples per pixel side for the antialiased coverage
_BOUNCES = 2  # ground contacts of a bouncing clip (over its whole duration)

Seed = Union[int, np.random.Generator, None]


# --------------------------------------------------------------------------- data types


def _check_name(value: str, allowed, what: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {tuple(allowed)}")


@dataclass(frozen=True)
class Scene:
    """One still image: a single object on a background.

    ``x`` and ``y`` are the object's centroid as fractions of the frame (see the module
    docstring); the object must lie fully inside the frame.
    """

    shape: str
    colour: str
    size: str
    background: str
    x: float = 0.5
    y: float = 0.5

    def __post_init__(self) -> None:
        _check_name(self.shape, SHAPES, "shape")
        _check_name(self.colour, COLOURS, "colour")
        _check_name(self.size, SIZES, "size")
        _check_name(self.background, BACKGROUNDS, "background")
        (x_lo, x_hi), (y_lo, y_hi) = centre_range(self.shape, self.size, margin=0.0)
        eps = 1e-9
        if not (x_lo - eps <= self.x <= x_hi + eps and y_lo - eps <= self.y <= y_hi + eps):
            raise ValueError(
                f"{self.size} {self.shape} at ({self.x:.3f}, {self.y:.3f}) leaves the frame: "
                f"x must be in [{x_lo:.3f}, {x_hi:.3f}], y in [{y_lo:.3f}, {y_hi:.3f}]"
            )


@dataclass(frozen=True)
class Clip:
    """A short video: one object moving along a path over a static background.

    Path parameters (all in ``[0, 1]``), relative to the range of centre positions that
    keep the object :data:`MARGIN` away from the frame border:

    * ``lane`` -- position across the motion: the row of a left/right clip, the column
      of an up/down or bouncing clip; for ``diagonal`` it picks the direction
      (``< 0.5``: towards the bottom right, otherwise towards the top right).
    * ``phase`` -- where the motion starts: along the free stretch for straight and
      diagonal paths, the starting angle (in turns) for ``circling``, the starting point
      of the bounce cycle for ``bouncing``.
    * ``travel`` -- amount of motion: fraction of the range covered by straight and
      diagonal paths, height of the bounce, radius of the circle (1 = as large as fits).
    """

    shape: str
    colour: str
    size: str
    background: str
    path: str
    num_frames: int = 16
    lane: float = 0.5
    phase: float = 0.0
    travel: float = 1.0

    def __post_init__(self) -> None:
        _check_name(self.shape, SHAPES, "shape")
        _check_name(self.colour, COLOURS, "colour")
        _check_name(self.size, SIZES, "size")
        _check_name(self.background, BACKGROUNDS, "background")
        _check_name(self.path, PATHS, "path")
        if int(self.num_frames) != self.num_frames or self.num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {self.num_frames!r}")
        for name in ("lane", "phase", "travel"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")


# --------------------------------------------------------------------------- geometry


def centre_range(shape: str, size: str, margin: float = MARGIN) -> tuple[tuple[float, float], tuple[float, float]]:
    """Normalised ``((x_min, x_max), (y_min, y_max))`` of centroids that keep the object
    at least ``margin`` (fraction of the frame) inside the frame."""
    radius = SIZES[size]
    left, right, up, down = (e * radius for e in SHAPE_EXTENTS[shape])
    return (margin + left, 1.0 - margin - right), (margin + up, 1.0 - margin - down)


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float, inset: float = 0.0) -> np.ndarray:
    """Boolean mask of the points ``(dx, dy)`` (relative to the centroid, y down) that
    lie inside ``shape`` of nominal ``radius`` (same units as ``dx``/``dy``), at least
    ``inset`` from its edge (every edge moved inwards by ``inset``)."""
    if shape == "circle":
        inner = radius - inset
        return dx * dx + dy * dy <= inner * inner
    if shape == "square":
        half = _SQUARE_HALF_SIDE * radius - inset
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":
        # Equilateral, apex up, centroid at the origin: apex at (0, -R), base at y = R/2; the
        # inradius is R/2, so moving the edges in by ``inset`` takes 2 * inset off R.
        big_r = _TRIANGLE_CIRCUMRADIUS * radius - 2 * inset
        return (dy <= big_r / 2) & (math.sqrt(3) * np.abs(dx) <= dy + big_r)
    if shape == "cross":
        half_w, arm = _CROSS_HALF_WIDTH * radius - inset, radius - inset
        ax, ay = np.abs(dx), np.abs(dy)
        return ((ax <= arm) & (ay <= half_w)) | ((ax <= half_w) & (ay <= arm))
    raise ValueError(f"unknown shape {shape!r}")


def _coverage(shape: str, radius_px: float, cx: float, cy: float, size: int, inset_px: float = 0.0):
    """Antialiased coverage of a shape centred at continuous pixel coordinates
    ``(cx, cy)`` (pixel ``i`` spans ``[i, i + 1)``), shrunk by ``inset_px`` (see :func:`_inside`).

    Returns ``(rows, cols, alpha)``: the slices of the frame that the (unshrunk) shape touches
    and the fraction of each pixel it covers there.
    """
    left, right, up, down = (e * radius_px for e in SHAPE_EXTENTS[shape])
    c0 = max(int(math.floor(cx - left)) - 1, 0)
    c1 = min(int(math.ceil(cx + right)) + 1, size)
    r0 = max(int(math.floor(cy - up)) - 1, 0)
    r1 = min(int(math.ceil(cy + down)) + 1, size)
    ss = _SUPERSAMPLING
    offsets = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(c0, c1)[:, None] + offsets[None, :]).ravel() - cx
    ys = (np.arange(r0, r1)[:, None] + offsets[None, :]).ravel() - cy
    inside = _inside(shape, xs[None, :], ys[:, None], radius_px, inset_px)
    alpha = inside.reshape(r1 - r0, ss, c1 - c0, ss).mean(axis=(1, 3))
    return slice(r0, r1), slice(c0, c1), alpha


# --------------------------------------------------------------------------- rendering


def render_background(background: str, size: int = 64) -> np.ndarray:
    """Float RGB image (``(size, size, 3)``, values in ``[0, 255]``) of a background.

    Each texture blends the background's base and accent colours with a smooth pattern
    defined in normalised coordinates (so it scales with ``size``):

    * ``green grass`` -- wavy vertical blade stripes;
    * ``blue sky`` -- vertical gradient, deep blue at the top to pale at the bottom;
    * ``white snow`` -- soft grey-blue drifts;
    * ``sandy beach`` -- wavy horizontal ripples;
    * ``grey road`` -- fine asphalt grain (a soft checker);
    * ``black night`` -- dark gradient, lighter towards the horizon (bottom).
    """
    _check_name(background, BACKGROUNDS, "background")
    coords = (np.arange(size) + 0.5) / size
    u = coords[None, :]  # horizontal, 0 at the left
    v = coords[:, None]  # vertical, 0 at the top
    two_pi = 2 * math.pi
    if background == "green grass":
        t = 0.5 + 0.5 * np.sin(two_pi * (10 * u + 0.6 * np.sin(two_pi * 3 * v)))
    elif background == "blue sky":
        t = v + 0 * u
    elif background == "white snow":
        t = 0.5 + 0.5 * np.sin(two_pi * (3 * u + 2 * v)) * np.sin(two_pi * (3 * v - 2 * u))
    elif background == "sandy beach":
        t = 0.5 + 0.5 * np.sin(two_pi * (6 * v + 0.3 * np.sin(two_pi * 2 * u)))
    elif background == "grey road":
        t = 0.5 + 0.5 * np.sin(two_pi * 8 * u) * np.sin(two_pi * 8 * v)
    else:  # black night
        t = v * v + 0 * u
    base, accent = (np.asarray(c, dtype=np.float64) for c in BACKGROUNDS[background])
    return base * (1.0 - t[..., None]) + accent * t[..., None]


def _composite(canvas: np.ndarray, shape: str, colour: str, size_name: str, x: float, y: float, background: str) -> None:
    """Paint an object, in its colour inside an outline of :data:`OUTLINES`' colour for ``background``, in place
    onto a float canvas of shape ``(S, S, 3)``."""
    size = canvas.shape[0]
    radius, cx, cy = SIZES[size_name] * size, x * size, y * size
    rows, cols, alpha = _coverage(shape, radius, cx, cy, size)
    _, _, fill = _coverage(shape, radius, cx, cy, size, inset_px=OUTLINE_WIDTH * size)
    # each pixel's area: background outside the shape, outline between the shape's and the fill's edges, then fill
    # (with no outline, fill == alpha and no pixel shows any outline colour)
    outline = np.asarray(OUTLINES[background], dtype=np.float64)
    rgb = np.asarray(COLOURS[colour], dtype=np.float64)
    patch = canvas[rows, cols]
    canvas[rows, cols] = (patch * (1.0 - alpha[..., None]) + outline * (alpha - fill)[..., None]
                          + rgb * fill[..., None])


def _finish(canvas: np.ndarray, as_float: bool) -> np.ndarray:
    """Quantise a float ``[0, 255]`` canvas to uint8 (or float32 in ``[0, 1]``)."""
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image.astype(np.float32) / 255.0 if as_float else image


def render_scene(scene: Scene, size: int = 64, as_float: bool = False) -> np.ndarray:
    """Render a scene as a ``(size, size, 3)`` uint8 image (float32 in ``[0, 1]`` if
    ``as_float``). Float output is the uint8 image divided by 255."""
    canvas = render_background(scene.background, size)
    _composite(canvas, scene.shape, scene.colour, scene.size, scene.x, scene.y, scene.background)
    return _finish(canvas, as_float)


def object_coverage(scene: Scene, size: int = 64) -> np.ndarray:
    """The fraction of each pixel of a ``size`` render that the scene's object covers: ``(size, size)`` float64 in
    ``[0, 1]``, the renderer's own mask of the object."""
    coverage = np.zeros((size, size))
    rows, cols, alpha = _coverage(scene.shape, SIZES[scene.size] * size, scene.x * size, scene.y * size, size)
    coverage[rows, cols] = alpha
    return coverage


def scene_centre_px(scene: Scene, size: int = 64) -> tuple[float, float]:
    """The object's centroid ``(x, y)`` in pixel-index units of a ``size`` render."""
    return scene.x * size - 0.5, scene.y * size - 0.5


# --------------------------------------------------------------------------- clips


def clip_positions(clip: Clip) -> np.ndarray:
    """Normalised centroid positions ``(num_frames, 2)`` (columns x, y) of a clip.

    ``t`` runs from 0 at the first frame to 1 at the last (for ``circling`` the clip
    makes exactly one turn, so the last frame stops one step short of the first).
    """
    (x_lo, x_hi), (y_lo, y_hi) = centre_range(clip.shape, clip.size)
    x_span, y_span = x_hi - x_lo, y_hi - y_lo
    n = clip.num_frames
    t = np.arange(n) / max(n - 1, 1)
    # Along-path fraction for straight and diagonal paths: starts at phase * slack.
    u = clip.phase * (1.0 - clip.travel) + clip.travel * t
    lane_x = x_lo + clip.lane * x_span
    lane_y = y_lo + clip.lane * y_span
    path = clip.path
    if path == "right":
        xs, ys = x_lo + u * x_span, np.full(n, lane_y)
    elif path == "left":
        xs, ys = x_hi - u * x_span, np.full(n, lane_y)
    elif path == "down":
        xs, ys = np.full(n, lane_x), y_lo + u * y_span
    elif path == "up":
        xs, ys = np.full(n, lane_x), y_hi - u * y_span
    elif path == "diagonal":
        xs = x_lo + u * x_span
        ys = y_lo + u * y_span if clip.lane < 0.5 else y_hi - u * y_span
    elif path == "bouncing":
        height = clip.travel * y_span
        ys = y_hi - height * np.abs(np.sin(math.pi * (_BOUNCES * t + clip.phase)))
        xs = np.full(n, lane_x)
    elif path == "circling":
        radius = clip.travel * 0.5 * min(x_span, y_span)
        angle = 2 * math.pi * (clip.phase + np.arange(n) / n)
        xs = (x_lo + x_hi) / 2 + radius * np.cos(angle)
        ys = (y_lo + y_hi) / 2 + radius * np.sin(angle)
    else:  # pragma: no cover - Clip validates the path
        raise ValueError(f"unknown path {path!r}")
    return np.stack([xs, ys], axis=1)


def scene_at(clip: Clip, frame: int) -> Scene:
    """The still :class:`Scene` shown by frame ``frame`` of ``clip``."""
    x, y = clip_positions(clip)[frame]
    return Scene(clip.shape, clip.colour, clip.size, clip.background, float(x), float(y))


def object_track(clip: Clip, size: int = 64) -> np.ndarray:
    """Ground-truth centroids ``(num_frames, 2)`` (x, y) in pixel-index units of a
    ``size`` render of ``clip``."""
    return clip_positions(clip) * size - 0.5


def render_clip(clip: Clip, size: int = 64, as_float: bool = False) -> np.ndarray:
    """Render a clip as a ``(num_frames, size, size, 3)`` uint8 video (float32 in
    ``[0, 1]`` if ``as_float``)."""
    background = render_background(clip.background, size)
    frames = []
    for x, y in clip_positions(clip):
        canvas = background.copy()
        _composite(canvas, clip.shape, clip.colour, clip.size, float(x), float(y), clip.background)
        frames.append(_finish(canvas, as_float))
    return np.stack(frames)


# --------------------------------------------------------------------------- captions


_A_BEFORE_VOWEL = re.compile(r"\ba (?=[aeiou])")


def fill_template(template: str, **words: str) -> str:
    """A caption template with its ``{fields}`` filled in, with "an" for "a" before a vowel
    (``"a {colour} {shape}"`` with orange, square -> ``"an orange square"``)."""
    return _A_BEFORE_VOWEL.sub("an ", template.format(**words))


def caption(scene: Scene, template_index: int = 0) -> str:
    """Caption of a scene from :data:`CAPTION_TEMPLATES` (index taken modulo their
    number), e.g. ``"a small red circle on green grass"``."""
    template = CAPTION_TEMPLATES[template_index % len(CAPTION_TEMPLATES)]
    return fill_template(template, shape=scene.shape, colour=scene.colour, size=scene.size, background=scene.background)


def clip_caption(clip: Clip, template_index: int = 0) -> str:
    """Caption of a clip from :data:`CLIP_CAPTION_TEMPLATES` (index modulo their
    number), e.g. ``"a red circle moving right on green grass"``."""
    template = CLIP_CAPTION_TEMPLATES[template_index % len(CLIP_CAPTION_TEMPLATES)]
    return fill_template(
        template,
        shape=clip.shape,
        colour=clip.colour,
        size=clip.size,
        background=clip.background,
        motion=PATHS[clip.path],
    )


def parse_caption(text: str) -> dict[str, str] | None:
    """The attributes a caption from any template names (``shape``, ``colour``, ``background``, and ``size`` and
    ``path`` where it says them), or None when ``text`` is not a toy-world caption: the inverse of :func:`caption`
    and :func:`clip_caption`."""
    words = {
        "shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "background": tuple(BACKGROUNDS),
        "motion": tuple(PATHS.values()),
    }
    for template in CLIP_CAPTION_TEMPLATES + CAPTION_TEMPLATES:
        pattern = re.escape(template)
        for name, options in words.items():
            pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{'|'.join(map(re.escape, options))})")
        pattern = pattern.replace(r"a\ ", r"an?\ ")  # "an" before a vowel, as fill_template writes it
        found = re.fullmatch(pattern, text.strip().lower())
        if found:
            attributes = found.groupdict()
            if "motion" in attributes:
                attributes["path"] = {phrase: name for name, phrase in PATHS.items()}[attributes.pop("motion")]
            return attributes
    return None


def all_caption_words() -> set[str]:
    """Every word any caption (scene or clip, any template) can contain."""
    words: set[str] = {"an"}  # from "a" before a vowel (fill_template)
    for template in CAPTION_TEMPLATES + CLIP_CAPTION_TEMPLATES:
        for token in template.split():
            if not token.startswith("{"):
                words.add(token)
    for phrases in (SHAPES, COLOURS, SIZES, BACKGROUNDS, PATHS.values()):
        for phrase in phrases:
            words.update(phrase.split())
    return words


# --------------------------------------------------------------------------- sampling


def _generator(rng: Seed) -> np.random.Generator:
    """A numpy Generator from a seed (or the Generator itself)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _choice(rng: np.random.Generator, options) -> str:
    """One element of ``options`` (any iterable of names), uniformly."""
    options = tuple(options)
    return options[int(rng.integers(len(options)))]


def random_scene(rng: Seed = None, **fixed) -> Scene:
    """A uniformly random scene; the object keeps :data:`MARGIN` from the border.

    ``rng`` is a seed or a :class:`numpy.random.Generator` (same seed -> same scene).
    Keyword arguments pin attributes (e.g. ``background="blue sky"``); the random draws
    are made regardless, so pinning one attribute does not change the others.
    """
    rng = _generator(rng)
    shape = _choice(rng, SHAPES)
    colour = _choice(rng, COLOURS)
    size = _choice(rng, SIZES)
    background = _choice(rng, BACKGROUNDS)
    fx, fy = rng.random(2)
    shape, size = fixed.get("shape", shape), fixed.get("size", size)
    (x_lo, x_hi), (y_lo, y_hi) = centre_range(shape, size)
    values = dict(
        shape=shape, colour=colour, size=size, background=background,
        x=float(x_lo + fx * (x_hi - x_lo)), y=float(y_lo + fy * (y_hi - y_lo)),
    )
    values.update(fixed)
    return Scene(**values)


def random_clip(rng: Seed = None, num_frames: int | None = None, **fixed) -> Clip:
    """A uniformly random clip (path, object, background, and ``num_frames`` drawn from
    ``[MIN_FRAMES, MAX_FRAMES]`` unless given). ``travel`` is drawn from ``[0.6, 1]`` so
    that every clip shows visible motion. Keyword arguments pin attributes, as in
    :func:`random_scene`."""
    rng = _generator(rng)
    values = dict(
        shape=_choice(rng, SHAPES),
        colour=_choice(rng, COLOURS),
        size=_choice(rng, SIZES),
        background=_choice(rng, BACKGROUNDS),
        path=_choice(rng, PATHS),
        num_frames=int(rng.integers(MIN_FRAMES, MAX_FRAMES + 1)),
        lane=float(rng.random()),
        phase=float(rng.random()),
        travel=float(rng.uniform(0.6, 1.0)),
    )
    if num_frames is not None:
        values["num_frames"] = int(num_frames)
    values.update(fixed)
    return Clip(**values)


def with_attributes(item: Scene | Clip, **changes) -> Scene | Clip:
    """A copy of a scene or clip with some attributes replaced (e.g. an edit target:
    ``with_attributes(clip, colour="blue")``). Positions are kept as they are: a clip's
    track adapts to a new shape or size, a scene raises ``ValueError`` if the new object
    would no longer fit at its position."""
    return replace(item, **changes)
