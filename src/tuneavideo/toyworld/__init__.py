"""The toy world: procedural scenes and clips with known ground truth, and a detector.

Stable Diffusion weights are not available everywhere, so the project can train a small
text-to-image model on this world and measure editing quality exactly:

* :mod:`~tuneavideo.toyworld.render` draws one coloured shape on a textured background
  (still :class:`Scene` or moving :class:`Clip`) and writes its captions;
* :mod:`~tuneavideo.toyworld.detect` reads shape, colour, size, background and centroid
  back from any frame, robustly enough for blurry model samples.
"""

from .detect import Detection, detect_frame, detect_video
from .render import (
    BACKGROUNDS,
    CAPTION_TEMPLATES,
    CLIP_CAPTION_TEMPLATES,
    COLOURS,
    MARGIN,
    MAX_FRAMES,
    MIN_FRAMES,
    PATHS,
    SHAPES,
    SIZES,
    Clip,
    Scene,
    all_caption_words,
    caption,
    centre_range,
    clip_caption,
    clip_positions,
    fill_template,
    object_track,
    parse_caption,
    random_clip,
    random_scene,
    render_background,
    render_clip,
    render_scene,
    scene_at,
    scene_centre_px,
    with_attributes,
)

__all__ = [
    "BACKGROUNDS",
    "CAPTION_TEMPLATES",
    "CLIP_CAPTION_TEMPLATES",
    "COLOURS",
    "MARGIN",
    "MAX_FRAMES",
    "MIN_FRAMES",
    "PATHS",
    "SHAPES",
    "SIZES",
    "Clip",
    "Detection",
    "Scene",
    "all_caption_words",
    "caption",
    "centre_range",
    "clip_caption",
    "clip_positions",
    "fill_template",
    "detect_frame",
    "detect_video",
    "object_track",
    "parse_caption",
    "random_clip",
    "random_scene",
    "render_background",
    "render_clip",
    "render_scene",
    "scene_at",
    "scene_centre_px",
    "with_attributes",
]
