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
- **psnr**: against the source frames (meaningful when the edit prompt is the source prompt).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from .detect import Detection, detect_video

ATTRIBUTES = ("shape", "colour", "background")
#: What stays the same through every frame of a toy-world clip: :data:`ATTRIBUTES` and the object's size (which
#: consistency, counted on :data:`ATTRIBUTES` alone, leaves out).
CONSTANT_ATTRIBUTES = ("shape", "colour", "size", "background")


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
    )
