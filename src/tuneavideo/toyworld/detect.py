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
   the object's seed. It holds the object's fill and, drawn inside the object's extent,
   its outline (see :data:`~tuneavideo.toyworld.render.OUTLINES`).
3. **Fill and outline colours.** Over the seed's *unsmoothed* pixels, with ``B`` the
   background plane under each, a pure colour is the one farthest from the line through
   ``B`` towards the other colour (a mix of two colours, or of one with the background,
   lies nearer that line). Starting from the per-channel median of the seed's deepest
   pixels (chessboard depth >= half its maximum) as the fill ``O``: if the 90th
   percentile of the pixels' distance from the ``B``-``O`` line is below 40, the object
   has no outline (a flat object, or one whose outline the image lost) and ``O`` is the
   median of the seed's *core* (``d`` >= 75% of the seed's 90th-percentile ``d``, away
   from the edges where object and background mix). Otherwise the outline colour ``K``
   is the median of the pixels farthest from the ``B``-``O`` line (>= 75% of its 90th
   percentile), then ``O`` likewise from the ``B``-``K`` line, twice; of the two, the
   colour whose pixels lie deeper in the seed on average is the fill. ``K`` is measured,
   not taken from the outline table, so an outline drawn weakly or in another grey is
   read as well.
4. **Coverage and mask.** Each smoothed pixel above the noise threshold is unmixed by
   least squares as ``a * O + b * K + (1 - a - b) * B`` and covered by the object to
   ``alpha = a + b`` (clipped to [0, 1]; ``a * O + (1 - a) * B`` without an outline, or
   when ``O - B`` and ``K - B`` are nearly parallel). The mask is the largest
   8-connected component of ``alpha > 0.5`` with its holes filled: the boundary sits
   where a blurred or antialiased edge is half object, half background, whatever the
   local contrast (it varies over gradient backgrounds), so area and centroid are
   unbiased under blur; fill and outline both count, so the mask is the object's whole
   extent, and pixels where fill and outline mix stay inside it. The *coverage* is
   ``alpha`` over the mask grown by one pixel, 1 in the filled holes.
5. **Centroid** = coverage-weighted mean pixel position (sub-pixel; pixel-index units:
   pixel ``[row j, col i]`` is at ``(x=i, y=j)``).
6. **Colour** = the :data:`~tuneavideo.toyworld.render.COLOURS` entry nearest to ``O``
   (palette entries are >= 90 RGB units apart); with an outline, nearest to ``O`` of
   the mixes ``t * C + (1 - t) * K``, ``t`` in [0.5, 1], of each entry ``C`` with the
   outline: a fill a few pixels wide (a small cross's arms) keeps no pure pixel once
   blurred.
7. **Shape** from two moment features of the coverage (see :func:`shape_features`),
   matched to the nearest prototype:

   * *coupling* ``E[x^2 y^2] / (E[x^2] E[y^2])``: 1 for the square, 2/3 for the
     circle, 0.38 for the cross, 0.8 for the triangle;
   * *skew* of the vertical profile: -0.57 for the apex-up triangle, 0 otherwise.

   Moments use every object pixel, not extreme ones (a bounding box or corner count
   moves by a whole pixel with one noisy pixel, a large error on a 16 px object), are
   invariant to scale and position, and the effect of a Gaussian blur on them is
   known and removed (its variance is estimated from the coverage and the mask).
8. **Size**: the radius implied by the mask's area for the detected shape (area /
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
_MIN_OUTLINE_CONTRAST = 40.0  # an outline stands this far (0..255) off the background-fill line, or is not there
_MIN_FILL_PURITY = 0.5  # least fraction of fill colour in the measured fill (the rest: outline)
_MIN_UNMIX_SINE = 0.25  # fill and outline directions from the background closer than this (sine) are not unmixed


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


def _components(mask: np.ndarray) -> tuple[list[int], list[int], list[int], list[int]]:
    """8-connected components of a boolean mask, as horizontal runs of True pixels.

    Returns ``(rows, starts, ends, roots)``: run ``i`` covers ``mask[rows[i], starts[i]:ends[i]]`` and belongs to
    the component labelled ``roots[i]``. A run touches a run of the previous row when their column ranges overlap
    or meet diagonally; touching runs are merged with a union-find.
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end
    rows, starts = np.nonzero(steps == 1)
    ends = np.nonzero(steps == -1)[1]  # same (row-major) order as the starts
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
    return rows, starts, ends, [find(i) for i in range(len(rows))]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (empty if none)."""
    rows, starts, ends, roots = _components(mask)
    out = np.zeros_like(mask, dtype=bool)
    if not rows:
        return out
    sizes: dict[int, int] = {}
    for i, root in enumerate(roots):
        sizes[root] = sizes.get(root, 0) + ends[i] - starts[i]
    best = max(sizes, key=sizes.get)
    for i, root in enumerate(roots):
        if root == best:
            out[rows[i], starts[i] : ends[i]] = True
    return out


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every region of False pixels that does not reach the border of the mask's bounding box
    (grown by one pixel) set to True."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return mask
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(mask[r0:r1, c0:c1], 1)
    run_rows, starts, ends, roots = _components(~crop)
    outside = {root for i, root in enumerate(roots)
               if run_rows[i] in (0, crop.shape[0] - 1) or starts[i] == 0 or ends[i] == crop.shape[1]}
    out = mask.copy()
    for i, root in enumerate(roots):
        if root not in outside:
            out[r0 + run_rows[i] - 1, c0 + starts[i] - 1 : c0 + ends[i] - 1] = True
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


def _erode(mask: np.ndarray) -> np.ndarray:
    """Binary erosion with a 3x3 square (outside the frame counts as False), as two 3-pixel erosions."""
    rows = mask.copy()
    rows[1:] &= mask[:-1]
    rows[:-1] &= mask[1:]
    rows[0] = rows[-1] = False
    out = rows.copy()
    out[:, 1:] &= rows[:, :-1]
    out[:, :-1] &= rows[:, 1:]
    out[:, 0] = out[:, -1] = False
    return out


def _depth(mask: np.ndarray) -> np.ndarray:
    """Chessboard depth of each pixel of ``mask``: 1 on its edge, k where k - 1 erosions keep it, 0 outside."""
    depth = np.zeros(mask.shape, dtype=np.int32)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return depth
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    current = mask[window]
    inner = depth[window]
    while current.any():
        inner += current
        current = _erode(current)
    return depth


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


def classify_colour(rgb, outline_rgb=None) -> str:
    """Name of the palette colour that ``rgb`` (0..255) shows: the nearest :data:`COLOURS` entry ``C``, or, with an
    ``outline_rgb`` ``K``, the entry nearest to ``rgb`` of the colours ``t * C + (1 - t) * K`` with ``t`` in
    [:data:`_MIN_FILL_PURITY`, 1] (a thin fill, blurred, mixes with its outline)."""
    if outline_rgb is None:
        return _nearest(rgb, COLOURS)
    names = list(COLOURS)
    refs = np.asarray([COLOURS[n] for n in names], dtype=np.float64)
    towards = refs - outline_rgb
    t = np.clip((towards @ (rgb - outline_rgb)) / np.einsum("nc,nc->n", towards, towards), _MIN_FILL_PURITY, 1.0)
    mixes = outline_rgb + t[:, None] * towards
    return names[int(np.argmin(np.linalg.norm(mixes - rgb, axis=1)))]


def classify_size(area: float, shape: str, frame_width: int) -> tuple[str, float]:
    """Size name for an object of ``area`` pixels, and the estimated radius as a
    fraction of the frame width. Sizes are compared on a log scale, so the boundary
    between two sizes is the geometric mean of their radii."""
    radius = math.sqrt(area / SHAPE_AREA_FACTORS[shape]) / frame_width
    name = min(SIZES, key=lambda s: abs(math.log(radius / SIZES[s])))
    return name, radius


def _off_line(pixels: np.ndarray, base: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance of each of ``pixels`` (N, 3) from the line through its background ``base`` (N, 3) along
    ``end - mean(base)``: the mixes of that background with colour ``end`` lie on it."""
    direction = end - base.mean(axis=0)
    direction = direction / max(float(np.linalg.norm(direction)), 1e-6)
    offset = pixels - base
    return np.linalg.norm(offset - np.outer(offset @ direction, direction), axis=1)


def _object_colours(raw, plane, seed, core):
    """The object's fill colour and its outline colour (``None`` when it shows no outline), from the unsmoothed
    pixels of the seed region (see the module docstring, step 3)."""
    pixels, base = raw[seed], plane[seed]
    depth = _depth(seed)[seed]
    deep = depth >= (depth.max() + 1) // 2
    fill = np.median(pixels[deep], axis=0)
    off = _off_line(pixels, base, fill)
    if np.percentile(off, 90) < _MIN_OUTLINE_CONTRAST:
        return np.median(raw[core], axis=0), None
    for _ in range(2):
        off = _off_line(pixels, base, fill)
        outline_core = off >= _CORE_FRACTION * np.percentile(off, 90)
        outline = np.median(pixels[outline_core], axis=0)
        off = _off_line(pixels, base, outline)
        fill_core = off >= _CORE_FRACTION * np.percentile(off, 90)
        fill = np.median(pixels[fill_core], axis=0)
    if depth[fill_core].mean() < depth[outline_core].mean():  # the outline is the outer colour
        fill, outline = outline, fill
    return fill, outline


def _unmix(pixels, base, object_rgb, outline_rgb) -> np.ndarray:
    """Fraction of each of ``pixels`` (N, 3) covered by the object, fill and outline together, clipped to [0, 1],
    over the background colours ``base`` (N, 3): the pixel is unmixed as ``a * O + b * K + (1 - a - b) * B`` (least
    squares) and the coverage is ``a + b``; with no outline (or one in line with the background and the fill), as
    ``a * O + (1 - a) * B``."""
    x = pixels - base
    u = object_rgb - base
    uu = np.einsum("nc,nc->n", u, u)
    ux = np.einsum("nc,nc->n", u, x)
    if outline_rgb is not None:
        v = outline_rgb - base
        vv = np.einsum("nc,nc->n", v, v)
        uv = np.einsum("nc,nc->n", u, v)
        det = uu * vv - uv * uv
        if len(det) and float(np.min(det / np.maximum(uu * vv, 1e-6))) > _MIN_UNMIX_SINE**2:
            vx = np.einsum("nc,nc->n", v, x)
            return np.clip(((vv - uv) * ux + (uu - uv) * vx) / det, 0.0, 1.0)
    return np.clip(ux / np.maximum(uu, 1e-6), 0.0, 1.0)


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
    object_rgb, outline_rgb = _object_colours(raw, plane, seed, dist >= _CORE_FRACTION * contrast)

    above = dist > noise_threshold
    alpha = np.zeros((h, w))
    alpha[above] = _unmix(smooth[above], plane[above], object_rgb, outline_rgb)
    solid = _largest_component(alpha > 0.5)
    mask = _fill_holes(solid)
    area = int(mask.sum())
    if area < min_area:
        return empty

    # alpha over the mask and one pixel around it, 1 in the mask's holes (where fill and outline mix, noise or an
    # outline unlike the one measured can bring alpha below 0.5 inside the object)
    coverage = np.where(mask & ~solid, 1.0, np.where(_dilate(mask), alpha, 0.0))
    _, cx, cy, *_ = _moments(coverage)
    colour = classify_colour(object_rgb, outline_rgb)
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
