"""Editing quality in the toy world, measured with the detector.

For a source clip and an edit that changes some attributes (``{"colour": "blue"}``):

- **alignment**: share of the edit's frames whose detected edited attributes match the prompt;
- **preservation**: share of frames whose unedited attributes (shape, colour, background; not
  size, which the captions do not always state) stay as in the source;
- **motion error**: mean distance in pixels between the object's centroid in the edit and in the
  source, frame by frame (frames where either has no object count as the frame diagonal);
  **motion error on found frames** is the same mean over only the frames where both show an object,
  so that the rare missing object (a detection question) does not hide the motion;
- **consistency**: share of frames whose attributes equal the video's majority attributes;
- **psnr**: against the source frames (meaningful when the edit prompt is the source prompt);
- **intact**: share of the edit's frames that are a clean drawing of one scene (:func:`intact`);
- **fidelity** of a frame: its PSNR against a clean render of the scene the detector read in it, both smoothed, which
  says whether the frame is a drawing of one scene of the world at all (a frame turned into a texture, or an object
  drawn twice, can still be read as an object; :data:`BROKEN_BELOW_DB`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from .detect import Detection, detect_video
from .render import Scene, centre_range, render_scene

ATTRIBUTES = ("shape", "colour", "background")
#: What stays the same through every frame of a toy-world clip: :data:`ATTRIBUTES` and the object's size (which
#: consistency, counted on :data:`ATTRIBUTES` alone, leaves out).
CONSTANT_ATTRIBUTES = ("shape", "colour", "size", "background")
#: A frame whose :func:`fidelity` is below this (dB) is broken: not a drawing of the scene read in it (its object
#: turned into a texture, gone, drawn twice or shrunk to a fragment). Set on the bundled model's frames of the
#: validation clips (benchmarks/README.md, "Frames that break"): every frame under it there is broken, clean renders
#: score 40 dB and more, and the models' frames 31 dB at the median.
BROKEN_BELOW_DB = 23.0
#: :func:`fidelity` compares frames smoothed over boxes of this many pixels a side (of a 64-pixel frame), so that a
#: background's texture, which a model draws at a phase of its own, does not count and objects do.
FIDELITY_BOX = 5


@dataclass
class EditScore:
    alignment: float
    preservation: float
    motion_error: float
    consistency: float
    psnr: float
    detected: float  # share of frames where the edit shows an object at all
    # mean distance over the frames where both videos show an object (NaN if there are none)
    motion_error_found: float
    # share of the edit's frames that are a clean drawing of one scene (:func:`intact`; NaN for frames not square)
    intact: float

    def as_dict(self) -> dict:
        return asdict(self)


def to_uint8_frames(video) -> np.ndarray:
    """``(f, 3, h, w)`` floats in [0, 1] (torch or numpy) or ``(f, h, w, 3)`` uint8, as ``(f, h, w, 3)`` uint8."""
    array = video.detach().cpu().numpy() if hasattr(video, "detach") else np.asarray(video)
    if array.dtype != np.uint8:
        if array.shape[1] == 3 and array.shape[-1] != 3:
            array = array.transpose(0, 2, 3, 1)
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return array


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def box_blur(image: np.ndarray, box: int) -> np.ndarray:
    """The mean of each pixel's ``box`` x ``box`` neighbourhood (an odd ``box``; the edges repeated outward), float64."""
    radius = box // 2
    padded = np.pad(image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    summed = np.cumsum(np.cumsum(np.pad(padded, ((1, 0), (1, 0), (0, 0))), axis=0), axis=1)
    height, width = image.shape[:2]
    return (summed[box:box + height, box:box + width] - summed[:height, box:box + width]
            - summed[box:box + height, :width] + summed[:height, :width]) / box**2


def fidelity(frame: np.ndarray, detection: Detection) -> float | None:
    """PSNR (dB) of a ``(h, w, 3)`` frame (uint8, or floats in [0, 1]) against a clean render of the scene the detector
    read in it (its shape, colour, size and background, the object centred on the detected centroid, moved inside the
    frame where it would leave it), both smoothed by :func:`box_blur` over :data:`FIDELITY_BOX` pixels scaled to the
    frame's width. ``None`` where the detector did not read a whole scene (no object, or an attribute undetermined),
    and for a frame that is not square (the world renders square frames only)."""
    frame = to_uint8_frames(np.asarray(frame)[None])[0]
    height, width = frame.shape[:2]
    if height != width or any(value is None for value in detection.attributes().values()) or detection.centroid is None:
        return None
    (x_lo, x_hi), (y_lo, y_hi) = centre_range(detection.shape, detection.size, margin=0.0)
    # centroid in pixel-index units -> fraction of the frame (the inverse of render.scene_centre_px)
    x = min(max((detection.centroid[0] + 0.5) / width, x_lo), x_hi)
    y = min(max((detection.centroid[1] + 0.5) / height, y_lo), y_hi)
    render = render_scene(Scene(detection.shape, detection.colour, detection.size, detection.background, x, y), width)
    box = max(1, round(FIDELITY_BOX * width / 64)) | 1
    return psnr(box_blur(render, box), box_blur(frame, box))


def intact(fidelity_db: float | None) -> bool:
    """Whether a frame of this :func:`fidelity` is a clean drawing of one scene: a whole scene read, at least
    :data:`BROKEN_BELOW_DB`."""
    return fidelity_db is not None and fidelity_db >= BROKEN_BELOW_DB


def majority(detections: list[Detection], names: tuple[str, ...] = ATTRIBUTES) -> dict:
    return {name: Counter(getattr(d, name) for d in detections).most_common(1)[0][0] for name in names}


def off_majority(detections: list[Detection]) -> list[dict]:
    """The frames whose :data:`CONSTANT_ATTRIBUTES` differ from the video's majority (what lowers consistency, and an
    object that changes size): for each such frame and attribute ``{"frame", "attribute", "majority", "value"}``."""
    common = majority(detections, CONSTANT_ATTRIBUTES)
    return [{"frame": index, "attribute": name, "majority": common[name], "value": getattr(d, name)}
            for index, d in enumerate(detections) for name in CONSTANT_ATTRIBUTES if getattr(d, name) != common[name]]


def score_edit(source, edited, changes: dict[str, str], source_attributes: dict[str, str]) -> EditScore:
    """Score one edited clip against its source; ``changes`` maps attribute -> the prompt's new value."""
    source_frames, edit_frames = to_uint8_frames(source), to_uint8_frames(edited)
    source_found = detect_video(source_frames)
    edit_found = detect_video(edit_frames)
    height, width = edit_frames.shape[1:3]
    diagonal = float(np.hypot(height, width))
    kept = [name for name in ATTRIBUTES if name not in changes]

    aligned = [all(getattr(d, k) == v for k, v in changes.items()) for d in edit_found]
    preserved = [all(getattr(d, k) == source_attributes[k] for k in kept) for d in edit_found]
    distances, found_distances = [], []
    for s, e in zip(source_found, edit_found):
        if s.centroid is None or e.centroid is None:
            distances.append(diagonal)
        else:
            found_distances.append(float(np.hypot(s.centroid[0] - e.centroid[0], s.centroid[1] - e.centroid[1])))
            distances.append(found_distances[-1])
    common = majority(edit_found)
    consistent = [all(getattr(d, k) == common[k] for k in ATTRIBUTES) for d in edit_found]
    return EditScore(
        alignment=float(np.mean(aligned)),
        preservation=float(np.mean(preserved)) if kept else 1.0,
        motion_error=float(np.mean(distances)),
        consistency=float(np.mean(consistent)),
        psnr=psnr(source_frames, edit_frames),
        detected=float(np.mean([d.found for d in edit_found])),
        motion_error_found=float(np.mean(found_distances)) if found_distances else float("nan"),
        # not measured on frames that are not square (fidelity renders the world's square frames)
        intact=float(np.mean([intact(fidelity(frame, d)) for frame, d in zip(edit_frames, edit_found)]))
        if height == width else float("nan"),
    )
