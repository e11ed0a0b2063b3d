"""Detector for the toy world: the ruler behind every quality metric.

It reads back, from a single frame, what :mod:`tuneavideo.toyworld.render` draws:
background, object colour, shape, size and centroid. It must work both on exact renders
and on imperfect images sampled from a small generative model (blurred, noisy,
off-colour, JPEG-damaged), so every step uses robust statistics rather than exact pixel
values. It imports only the vocabulary tables of ``render`` (names and reference
colours), never its drawing code.

Method (per frame, values on the 0..255 scale)
-----------------------------------------------
1. **Background model.** The frame is smoothed with a 3x3 box filter (cuts pixel noise
   by 3x). A plane ``a + b*x + c*y`` per channel is fitted by least squares to the
   border pixels (outer 1/32 of the frame), refitted without outliers, so gradients
   (sky, night) are modelled. The background's *name* is the reference colour (mean of
   the texture's base and accent colours) nearest to the per-channel median of the
   border pixels: the six backgrounds are >= 100 RGB units apart, far more than
   texture, noise or a colour cast.
2. **Object seed.** ``d`` = distance of each smoothed pixel to the background plane.
   Pixels with ``d`` above a noise threshold (median + 6 robust sigmas of ``d`` on the
   border, and at least 30) form candidate regions; the largest 8-connected one is
   the object's seed. Its *core* (``d`` >= 75% of the seed's 90th-percentile ``d``)
   lies away from the edges, where object and background mix, and the per-channel
   median of the *unsmoothed* core pixels is the object's colour ``O``.
3. **Coverage and mask.** Each pixel is unmixed as ``alpha * O + (1 - alpha) * B``
   with ``B`` the background plane there (``alpha`` = projection of ``pixel - B`` on
   ``O - B``, clipped to [0, 1], 0 where ``d`` is within the noise). The mask is the
   largest 8-connected component of ``alpha > 0.5``: the boundary sits where a blurred
   or antialiased edge is half object, half background, whatever the local contrast
   (it varies over gradient backgrounds), so area and centroid are unbiased under
   blur.
4. **Centroid** = ``alpha``-weighted mean pixel position over the mask grown by one
   pixel (sub-pixel; pixel-index units: pixel ``[row j, col i]`` is at ``(x=i, y=j)``).
5. **Colour** = the :data:`~tuneavideo.toyworld.render.COLOURS` entry nearest to ``O``
   (palette entries are >= 90 RGB units apart).
6. **Shape** from two moment features of the coverage (see :func:`shape_features`),
   matched to the nearest prototype:

   * *coupling* ``E[x^2 y^2] / (E[x^2] E[y^2])``: 1 for the square, 2/3 for the
     circle, 0.38 for the cross, 0.8 for the triangle;
   * *skew* of the vertical profile: -0.57 for the apex-up triangle, 0 otherwise.

   Moments use every object pixel, not extreme ones (a bounding box or corner count
   moves by a whole pixel with one noisy pixel, a large error on a 16 px object), are
   invariant to scale and position, and the effect of a Gaussian blur on them is
   known and removed (its variance is estimated from the coverage and the mask).
7. **Size**: the radius implied by the mask's area for the detected shape (area /
   nominal area-per-radius^2 of that shape), matched to the nominal radii of
   :data:`~tuneavideo.toyworld.render.SIZES` on a log scale (the two sizes differ by
   1.75x in radius, ~3x in area).

When no object stands out (nothing above the noise threshold, or fewer pixels than a
tiny fraction of the frame), the detection has an empty mask and ``None`` for colour,
shape, size and centroid; the background is still reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from .render import BACKGROUNDS, COLOURS, SHAPES, SIZES

#: Nominal area of each shape in units of its nominal radius squared (the world's
#: geometry as the detector knows it; a test checks it against renders).
SHAPE_AREA_FACTORS: dict[str, float] = {
    "circle": math.pi,
    "square": 4 * 0.9**2,
    "triangle": 3 * math.sqrt(3) / 4 * 1.3**2,
    "cross": 8 * 0.38 - 4 * 0.38**2,
}

#: Shape prototypes in feature space (see :func:`shape_features`), computed from the
#: ideal continuous shapes.
SHAPE_PROTOTYPES: dict[str, dict[str, float]] = {
    "circle": {"coupling": 2 / 3, "skew": 0.0},
    "square": {"coupling": 1.0, "skew": 0.0},
    "triangle": {"coupling": 0.8, "skew": -0.5657},
    "cross": {"coupling": 0.3833, "skew": 0.0},
}

#: Spread allowed for each feature when matching prototypes: the skewness scale is
#: smaller, so that a clear skew marks a triangle whatever the coupling says.
SHAPE_FEATURE_SCALES: dict[str, float] = {"coupling": 0.3, "skew": 0.25}

_BORDER_FRACTION = 1 / 32  # width of the border used for the background model
_MIN_THRESHOLD = 30.0  # lowest object/background distance counted as object (0..255)
_NOISE_SIGMAS = 6.0  # robust sigmas of border noise above which a pixel is object
_MIN_AREA_FRACTION = 0.002  # smaller components are noise (8 px at 64x64)
_CORE_FRACTION = 0.75  # seed pixels with d >= this * contrast are the colour core


@dataclass(frozen=True, eq=False)
class Detection:
    """What the detector read from one frame.

    ``mask`` is the object's (H, W) boolean mask (all False when nothing was found);
    ``centroid`` is ``(x, y)`` in pixel-index units; ``colour``, ``shape``, ``size``
    and ``background`` are vocabulary names, ``None`` when undetermined. ``area`` is
    the mask's pixel count, ``contrast`` the object's typical distance from the
    background (0..255), ``rgb`` the object's measured colour (0..255), ``features``
    the raw shape features (``coupling``, ``skew``, ``blur``; see
    :func:`shape_features`) and the estimated ``radius`` as a fraction of the frame
    width.
    """

    mask: np.ndarray
    colour: Optional[str]
    shape: Optional[str]
    size: Optional[str]
    centroid: Optional[tuple[float, float]]
    background: Optional[str]
    area: int = 0
    contrast: float = 0.0
    rgb: Optional[tuple[float, float, float]] = None
    features: dict = field(default_factory=dict)

    @property
    def found(self) -> bool:
        """Whether an object was detected."""
        return self.shape is not None

    def attributes(self) -> dict:
        """The categorical attributes as a dict (handy for comparisons)."""
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "background": self.background,
        }


# --------------------------------------------------------------------------- helpers


def _to_float255(frame) -> np.ndarray:
    """An (H, W, 3) float64 image on the 0..255 scale, from uint8 (0..255) or float
    (0..1) input."""
    image = np.asarray(frame)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float64)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"expected uint8 or float pixels, got {image.dtype}")
    return np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0


def _box3(image: np.ndarray) -> np.ndarray:
    """3x3 mean filter over the first two axes (edges replicated)."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((1, 1), (1, 1)) + ((0, 0),) * (image.ndim - 2), mode="edge")
    out = np.zeros_like(image)
    for dy in range(3):
        for dx in range(3):
            out += padded[dy : dy + h, dx : dx + w]
    return out / 9.0


def _border_mask(h: int, w: int) -> np.ndarray:
    """Boolean mask of the frame's border band."""
    width = max(1, int(round(min(h, w) * _BORDER_FRACTION)))
    mask = np.zeros((h, w), dtype=bool)
    mask[:width] = mask[-width:] = True
    mask[:, :width] = mask[:, -width:] = True
    return mask


def _robust_sigma(values: np.ndarray) -> float:
    """Median absolute deviation scaled to a Gaussian sigma."""
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _fit_background_plane(image: np.ndarray, border: np.ndarray) -> np.ndarray:
    """Per-channel plane ``a + b*x + c*y`` fitted to the border pixels, evaluated over
    the whole frame; a second fit drops border pixels far from the first one (e.g. an
    object touching the border)."""
    h, w = border.shape
    ys, xs = np.nonzero(border)
    design = np.stack([np.ones(len(xs)), xs / w, ys / h], axis=1)
    pixels = image[border]
    keep = np.ones(len(xs), dtype=bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[keep], pixels[keep], rcond=None)
        resid = np.linalg.norm(pixels - design @ coef, axis=1)
        keep = resid <= np.median(resid) + 3 * _robust_sigma(resid) + 1e-6
    columns = (np.arange(w) / w)[None, :, None]
    rows = (np.arange(h) / h)[:, None, None]
    return coef[0] + columns * coef[1] + rows * coef[2]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (empty if none).

    Works on horizontal runs of True pixels: a run touches a run of the previous row
    when their column ranges overlap or meet diagonally; touching runs are merged with
    a union-find, and the component with the most pixels is painted back.
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end
    rows, starts = np.nonzero(steps == 1)
    ends = np.nonzero(steps == -1)[1]  # same (row-major) order as the starts
    if len(rows) == 0:
        return np.zeros_like(mask, dtype=bool)
    rows, starts, ends = rows.tolist(), starts.tolist(), ends.tolist()

    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    prev_lo = prev_hi = 0  # runs of the previous row: indices [prev_lo, prev_hi)
    cur_lo = 0
    for i, row in enumerate(rows):
        if i > 0 and row != rows[i - 1]:
            # A new row starts: the runs just finished become the previous row
            # only if they sit directly above.
            adjacent = rows[i - 1] == row - 1
            prev_lo, prev_hi = (cur_lo, i) if adjacent else (i, i)
            cur_lo = i
        for j in range(prev_lo, prev_hi):
            # 8-connectivity: columns [starts, ends) overlap when extended by one.
            if starts[j] <= ends[i] and starts[i] <= ends[j]:
                root_i, root_j = find(i), find(j)
                if root_i != root_j:
                    parent[max(root_i, root_j)] = min(root_i, root_j)

    sizes: dict[int, int] = {}
    roots = [find(i) for i in range(len(rows))]
    for i, root in enumerate(roots):
        sizes[root] = sizes.get(root, 0) + ends[i] - starts[i]
    best = max(sizes, key=sizes.get)
    out = np.zeros_like(mask, dtype=bool)
    for i, root in enumerate(roots):
        if root == best:
            out[rows[i], starts[i] : ends[i]] = True
    return out


def _nearest(value: np.ndarray, table: dict) -> str:
    """Name of the table entry whose RGB value is nearest to ``value``."""
    names = list(table)
    refs = np.asarray([table[n] for n in names], dtype=np.float64)
    return names[int(np.argmin(np.linalg.norm(refs - value, axis=1)))]


def _background_references() -> dict[str, np.ndarray]:
    """Reference mean colour of each background: the mean of base and accent."""
    return {
        name: (np.asarray(base, float) + np.asarray(accent, float)) / 2
        for name, (base, accent) in BACKGROUNDS.items()
    }


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Binary dilation with a 3x3 square."""
    h, w = mask.shape
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def _moments(weights: np.ndarray) -> tuple[float, float, float, float, float, float, float]:
    """Weighted moments of the pixel grid: total weight, centroid (x, y), central
    ``E[x^2]``, ``E[y^2]``, ``E[x^2 y^2]`` and ``E[y^3]``."""
    rows = np.flatnonzero(weights.any(axis=1))
    cols = np.flatnonzero(weights.any(axis=0))
    r0, c0 = rows[0], cols[0]
    weights = weights[r0 : rows[-1] + 1, c0 : cols[-1] + 1]
    ys, xs = np.indices(weights.shape)
    total = float(weights.sum())
    cx = float((weights * xs).sum() / total)
    cy = float((weights * ys).sum() / total)
    dx, dy = xs - cx, ys - cy
    wx2, wy2 = weights * dx * dx, weights * dy * dy
    return (
        total, cx + c0, cy + r0,
        float(wx2.sum() / total), float(wy2.sum() / total),
        float((wx2 * dy * dy).sum() / total), float((wy2 * dy).sum() / total),
    )


def shape_features(coverage: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Scale-invariant, blur-corrected shape features of an object.

    ``coverage`` is the soft object coverage (0..1 per pixel, the blurred object),
    ``mask`` the binary half-contrast mask (the object with its blur mostly undone).

    * ``coupling`` = E[x^2 y^2] / (E[x^2] E[y^2]) about the centroid: 1 for a square
      (x and y independent), 2/3 for a disc, 0.8 for the triangle, 0.38 for the cross
      (its mass lies along the axes).
    * ``skew`` = E[y^3] / E[y^2]^1.5, the skewness of the vertical profile: -0.57 for
      the apex-up triangle, 0 for the vertically symmetric shapes.
    * ``blur`` = estimated blur variance s^2 (pixels^2).

    A Gaussian blur of variance s^2 adds s^2 to E[x^2] and E[y^2] and
    s^2 (E[x^2] + E[y^2]) + s^4 to E[x^2 y^2], and leaves E[y^3] unchanged; these terms
    are subtracted, with s^2 estimated as the excess variance of ``coverage`` over
    ``mask`` (thresholding at half contrast restores the unblurred outline).
    """
    _, _, _, vx, vy, m22, m3 = _moments(coverage)
    _, _, _, bx, by, _, _ = _moments(mask.astype(np.float64))
    blur = float(np.clip((vx + vy - bx - by) / 2, 0.0, 0.5 * min(vx, vy)))
    # a region one pixel wide (a streak in a generated frame) has no spread along one axis: floor it so that it is
    # classified (as whatever it is nearest to) instead of dividing by zero
    ux, uy = max(vx - blur, 1e-6), max(vy - blur, 1e-6)
    return {
        "coupling": (m22 - blur * (ux + uy) - blur * blur) / (ux * uy),
        "skew": m3 / uy**1.5,
        "blur": blur,
    }


def classify_shape(features: dict[str, float]) -> str:
    """Nearest shape prototype to ``features`` (see :data:`SHAPE_PROTOTYPES`), each
    feature divided by its scale in :data:`SHAPE_FEATURE_SCALES`."""
    best, best_dist = SHAPES[0], math.inf
    for name in SHAPES:
        dist = math.hypot(*(
            (features[key] - SHAPE_PROTOTYPES[name][key]) / SHAPE_FEATURE_SCALES[key]
            for key in SHAPE_FEATURE_SCALES
        ))
        if dist < best_dist:
            best, best_dist = name, dist
    return best


def classify_size(area: float, shape: str, frame_width: int) -> tuple[str, float]:
    """Size name for an object of ``area`` pixels, and the estimated radius as a
    fraction of the frame width. Sizes are compared on a log scale, so the boundary
    between two sizes is the geometric mean of their radii."""
    radius = math.sqrt(area / SHAPE_AREA_FACTORS[shape]) / frame_width
    name = min(SIZES, key=lambda s: abs(math.log(radius / SIZES[s])))
    return name, radius


# --------------------------------------------------------------------------- detection


def detect_frame(frame) -> Detection:
    """Detect the background and the object of one (H, W, 3) frame (uint8 0..255 or
    float 0..1). See the module docstring for the method."""
    raw = _to_float255(frame)
    h, w = raw.shape[:2]
    smooth = _box3(raw)
    border = _border_mask(h, w)
    background = _nearest(np.median(smooth[border], axis=0), _background_references())

    plane = _fit_background_plane(smooth, border)
    dist = np.linalg.norm(smooth - plane, axis=2)
    border_dist = dist[border]
    noise_threshold = max(
        _MIN_THRESHOLD, float(np.median(border_dist)) + _NOISE_SIGMAS * _robust_sigma(border_dist)
    )
    min_area = max(4, int(round(_MIN_AREA_FRACTION * h * w)))
    empty = Detection(np.zeros((h, w), dtype=bool), None, None, None, None, background)

    seed = _largest_component(dist > noise_threshold)
    if seed.sum() < min_area:
        return empty
    contrast = float(np.percentile(dist[seed], 90))
    core = seed & (dist >= _CORE_FRACTION * contrast)
    object_rgb = np.median(raw[core], axis=0)

    # Linear unmixing: a pixel is alpha * object + (1 - alpha) * background(x, y).
    towards = object_rgb - plane
    alpha = np.einsum("hwc,hwc->hw", smooth - plane, towards) / np.maximum(
        np.einsum("hwc,hwc->hw", towards, towards), 1e-6
    )
    alpha = np.clip(alpha, 0.0, 1.0) * (dist > noise_threshold)
    mask = _largest_component(alpha > 0.5)
    area = int(mask.sum())
    if area < min_area:
        return empty

    coverage = np.where(_dilate(mask), alpha, 0.0)
    _, cx, cy, *_ = _moments(coverage)
    colour = _nearest(object_rgb, COLOURS)
    features = shape_features(coverage, mask)
    shape = classify_shape(features)
    size, radius = classify_size(area, shape, w)
    features["radius"] = radius
    return Detection(
        mask, colour, shape, size, (cx, cy), background, area, contrast,
        tuple(float(v) for v in object_rgb), features,
    )


def detect_video(frames: Iterable) -> list[Detection]:
    """Detect every frame of a video ((F, H, W, 3) array or any iterable of frames)."""
    return [detect_frame(frame) for frame in frames]
