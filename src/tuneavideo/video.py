"""Reading and writing videos for Tune-A-Video.

Frames travel through the package as float32 tensors of shape ``(f, 3, h, w)``
with values in ``[0, 1]``.

Reading (:func:`read_video`, :func:`probe_video`) accepts the containers PyAV
(FFmpeg) decodes -- ``.mp4 .m4v .mov .webm .mkv .avi .gif`` and a few more --
and folders of images (``.png .jpg .jpeg .webp .bmp``, taken in natural order so
``frame2`` comes before ``frame10``). Frames are sampled the way the
Tune-A-Video reference does (``range(start, total, stride)[:num_frames]``, by
decode order), but unlike the reference a clip that is too short or damaged is
an error, never a silently shorter result.

Writing (:func:`write_video`) produces H.264 ``.mp4`` (libx264, yuv420p,
CRF 18) or looping ``.gif`` (Pillow), atomically.

Every problem with the caller's input raises :class:`VideoError`, whose message
is a single self-contained line that names the file, the problem and the fix
(the CLI prints it as ``error: <message>``).
"""

from __future__ import annotations

import math
import os
import re
import secrets
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import TuneAVideoError

__all__ = ["VideoError", "VideoInfo", "probe_video", "read_video", "write_video", "side_by_side"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".gif",
    ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp", ".ogv",
)  # fmt: skip
RESIZE_MODES = ("crop", "squash", "pad")
WRITE_SUFFIXES = (".mp4", ".gif")
DEFAULT_IMAGE_FPS = 8.0
MP4_CRF = 18

# Leading bytes of containers we read, to tell "damaged video" from "not a video".
_VIDEO_MAGIC = (
    (4, b"ftyp"),  # mp4 / mov / m4v / 3gp
    (4, b"moov"),  # old QuickTime
    (4, b"mdat"),  # QuickTime with the index at the end
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"RIFF"),  # AVI
    (0, b"GIF8"),  # GIF
)


class VideoError(TuneAVideoError):
    """A video or image folder that cannot be used as asked; the message is one line with the fix."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a clip (size as displayed, i.e. after rotation metadata)."""

    path: Path
    num_frames: int
    fps: float
    width: int
    height: int


# --------------------------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------------------------


def probe_video(path: str | os.PathLike, *, image_fps: float = DEFAULT_IMAGE_FPS) -> VideoInfo:
    """Return the frame count, frame rate and displayed size of a video file or image folder.

    The frame count comes from the container header; where the header has none
    (WebM/Matroska, some GIFs) it is counted by demuxing, without decoding. The
    first frame is decoded to learn the displayed size (rotation metadata, as
    written by phones, swaps width and height). A folder of images is a video
    at ``image_fps`` frames per second.
    """
    path = Path(path)
    if path.is_dir():
        if isinstance(image_fps, bool) or not isinstance(image_fps, (int, float)) or not 0 < image_fps < math.inf:
            raise VideoError(
                f"cannot probe {path}: image_fps must be a positive number, got {image_fps!r}. Pass e.g. 8."
            )
        files = _image_files(path)
        first = _load_image(files[0], path)  # (h, w, 3) uint8
        return VideoInfo(path, len(files), float(image_fps), first.shape[1], first.shape[0])

    with _open_video(path) as container:
        stream = container.streams.video[0]
        header_count = stream.frames or 0
        counted = 0  # packets holding data, i.e. coded frames
        first_frame = None
        try:
            for packet in container.demux(stream):
                if packet.size:
                    counted += 1
                if first_frame is None:
                    _check_packet(packet, path, counted)
                    first_frame = next(iter(packet.decode()), None)
                elif header_count:
                    break  # the header has the count: nothing more to read
        except av.FFmpegError as exc:
            raise _corrupt(path, f"demuxing failed ({_ffmpeg_message(exc)})") from exc
        if first_frame is None:
            raise VideoError(
                f"{path} contains no decodable video frames. Check that it plays, or re-export it as H.264 .mp4."
            )
        width, height = first_frame.width, first_frame.height
        if _quarter_turns(first_frame) % 2:
            width, height = height, width
        return VideoInfo(path, header_count or counted, _stream_fps(stream, header_count or counted), width, height)


def _stream_fps(stream: av.video.stream.VideoStream, num_frames: int) -> float:
    """Frames per second of ``stream``: the measured average rate, else FFmpeg's guess, else from the duration."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    if stream.duration and stream.time_base and num_frames:
        return num_frames / float(stream.duration * stream.time_base)
    return DEFAULT_IMAGE_FPS


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_video(
    path: str | os.PathLike,
    *,
    num_frames: int,
    start: int = 0,
    stride: int = 1,
    width: int = 512,
    height: int = 512,
    resize: str = "crop",
) -> torch.Tensor:
    """Read ``num_frames`` frames ``start, start + stride, ...`` of a clip, resized to ``width`` x ``height``.

    Returns a float32 tensor ``(num_frames, 3, height, width)`` in ``[0, 1]``.
    Frame indices count frames in decode (display) order from 0, as in the
    Tune-A-Video reference's ``range(start, len(video), stride)[:num_frames]``;
    decoding stops at the last frame needed.

    ``resize`` is ``"crop"`` (centre-crop to the target aspect ratio, then
    resize), ``"squash"`` (resize straight to the target, ignoring the aspect
    ratio: the reference's behaviour) or ``"pad"`` (fit inside the target and
    centre on black). Resizing is bilinear with antialiasing
    (``torch.nn.functional.interpolate(..., antialias=True)``), so downscaling
    does not alias.

    Raises :class:`VideoError` for bad arguments, missing, unreadable, damaged
    or too-short inputs.
    """
    path = Path(path)
    _check_read_args(path, num_frames, start, stride, width, height, resize)
    last = start + (num_frames - 1) * stride  # index of the last frame needed
    wanted = range(start, last + 1, stride)

    if path.is_dir():
        files = _image_files(path)
        if len(files) <= last:
            raise _too_short(path, len(files), num_frames, start, stride)
        frames, first_shape = [], None
        for index in wanted:
            image = _load_image(files[index], path)  # (h, w, 3) uint8
            if first_shape is None:
                first_shape = image.shape
            elif image.shape != first_shape:
                raise VideoError(
                    f"{files[index]} is {image.shape[1]}x{image.shape[0]} but {files[start].name} is "
                    f"{first_shape[1]}x{first_shape[0]}; all images in {path} must share one size. "
                    f"Resize them to match."
                )
            frames.append(_fit(image, width, height, resize))
        return torch.stack(frames)  # (f, 3, height, width)

    frames = []
    for index, frame in _decode(path, last, num_frames, start, stride):
        if index in wanted:  # skip the RGB conversion of frames the stride steps over
            frames.append(_fit(_frame_rgb(frame), width, height, resize))
    return torch.stack(frames)  # (f, 3, height, width)


def _check_read_args(
    path: Path, num_frames: int, start: int, stride: int, width: int, height: int, resize: str
) -> None:
    """Raise :class:`VideoError` for sampling or size arguments that cannot work, before touching the file."""
    for name, value, least, flag in (
        ("num_frames", num_frames, 1, "--num-frames"),
        ("stride", stride, 1, "--stride"),
        ("start", start, 0, "--start"),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise VideoError(
                f"cannot read {path}: {name} must be an integer >= {least}, got {value!r}. Pass {flag} {least} or more."
            )
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 8 or value % 8:
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 8:
                hint = f"use {value // 8 * 8} or {value // 8 * 8 + 8}"
            else:
                hint = "use e.g. 512"
            raise VideoError(
                f"cannot read {path} at {name} {value!r}: {name} must be a positive multiple of 8 "
                f"(the autoencoder downsamples by 8). Pass --{name} accordingly: {hint}."
            )
    if resize not in RESIZE_MODES:
        raise VideoError(f"cannot read {path}: unknown resize mode {resize!r}. Use --resize crop, squash or pad.")


def _decode(path: Path, last: int, num_frames: int, start: int, stride: int) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(index, frame)`` for frames 0..``last`` of a video file, then stop decoding.

    Raises :class:`VideoError` when the header already shows the clip is too
    short, when a packet is damaged or fails to decode before ``last``, and
    when the stream ends early.
    """
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: faster, same frames
        header_count = stream.frames or 0
        if header_count and header_count <= last:
            raise _too_short(path, header_count, num_frames, start, stride)
        index = 0
        try:
            for packet in container.demux(stream):
                _check_packet(packet, path, index)
                for frame in packet.decode():
                    yield index, frame
                    if index == last:
                        return
                    index += 1
        except av.FFmpegError as exc:
            raise _corrupt(path, f"decoding failed after {index} frames ({_ffmpeg_message(exc)})") from exc
    # The stream ended before frame `last`: `index` frames exist.
    if header_count > index:
        raise VideoError(
            f"{path} is probably truncated or corrupt: its header lists {header_count} frames but only {index} decode, "
            f"and {num_frames} frames at stride {stride} from frame {start} need {last + 1}. "
            f"Re-export or re-download the clip, or lower --num-frames or --stride."
        )
    raise _too_short(path, index, num_frames, start, stride)


def _frame_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as displayed: ``(h, w, 3)`` uint8 RGB with any rotation metadata applied."""
    rgb = frame.to_ndarray(format="rgb24")  # (h, w, 3) as coded
    turns = _quarter_turns(frame)
    return np.rot90(rgb, turns) if turns else rgb  # counter-clockwise, as the display matrix says


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that the display matrix asks for (0 to 3; other angles are ignored)."""
    return int(round((frame.rotation or 0) / 90)) % 4


def _fit(image: np.ndarray, width: int, height: int, resize: str) -> torch.Tensor:
    """Resize a ``(h, w, 3)`` uint8 image to a ``(3, height, width)`` float32 tensor in [0, 1] by ``resize`` mode."""
    h, w = image.shape[:2]
    if resize == "crop":
        # Largest centred window with the target aspect ratio, cropped before resizing.
        if w * height > h * width:  # source is wider than the target
            crop_w, crop_h = max(1, round(h * width / height)), h
        else:
            crop_w, crop_h = w, max(1, round(w * height / width))
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        image = image[top : top + crop_h, left : left + crop_w]
        return _resize(_to_tensor(image), height, width)
    if resize == "squash":
        return _resize(_to_tensor(image), height, width)
    # pad: the largest size that fits inside the target, centred on black
    scale = min(width / w, height / h)
    fit_w = min(width, max(1, round(w * scale)))
    fit_h = min(height, max(1, round(h * scale)))
    canvas = torch.zeros(3, height, width)  # (3, height, width), black
    top, left = (height - fit_h) // 2, (width - fit_w) // 2
    canvas[:, top : top + fit_h, left : left + fit_w] = _resize(_to_tensor(image), fit_h, fit_w)
    return canvas


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(h, w, 3)`` uint8 -> ``(3, h, w)`` float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bilinear resize of a ``(3, h, w)`` tensor to ``(3, height, width)``."""
    if image.shape[1:] == (height, width):
        return image
    out = F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return out[0].clamp_(0, 1)


# --------------------------------------------------------------------------------------------
# Opening files and folders, with errors that say what to do
# --------------------------------------------------------------------------------------------


def _open_video(path: Path) -> av.container.InputContainer:
    """Open a video file with PyAV, checking that it exists, is a video, has a video stream and is complete."""
    if not path.exists():
        raise VideoError(f"{path} does not exist. Check the path (relative paths start from {Path.cwd()}).")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        raise VideoError(
            f"{path} is a single image, not a video. Pass a video file, or a folder holding the frames as images."
        )
    if suffix not in VIDEO_SUFFIXES:
        raise VideoError(
            f"{path} is not a video (unsupported suffix {suffix!r}). "
            f"Pass a video file ({', '.join(VIDEO_SUFFIXES[:7])}, ...) or a folder of images."
        )
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        if _looks_like_video(path):
            raise _corrupt(path, f"FFmpeg cannot open it ({_ffmpeg_message(exc)})") from exc
        raise VideoError(
            f"{path} is not a video: FFmpeg cannot read it ({_ffmpeg_message(exc)}). "
            f"Check that it is the clip you meant, or re-export it as H.264 .mp4."
        ) from exc
    try:
        fmt = container.format.name
        if fmt == "image2" or (fmt.endswith("_pipe") and fmt != "gif_pipe"):
            kind = fmt.removesuffix("_pipe")
            raise VideoError(
                f"{path} is a single {kind} image, not a video. "
                f"Pass a video file, or a folder holding the frames as images."
            )
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream (audio only?). Pass a file that contains video.")
        _check_index(container.streams.video[0], path)
    except BaseException:
        container.close()
        raise
    return container


def _check_index(stream: av.video.stream.VideoStream, path: Path) -> None:
    """Raise if the container's index points past the end of the file (a truncated download or copy)."""
    size = path.stat().st_size
    end = max((entry.pos + entry.size for entry in stream.index_entries), default=0)
    if end > size:
        raise _corrupt(path, f"its index needs {end} bytes but the file has only {size}")


def _check_packet(packet: av.Packet, path: Path, index: int) -> None:
    """Raise for a packet the demuxer marked corrupt (typically cut short by the end of the file)."""
    if packet.is_corrupt:
        raise _corrupt(path, f"a packet is cut short or damaged (met after decoding {index} frames)")


def _looks_like_video(path: Path) -> bool:
    """True when the file starts with the signature of a video container we read."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _VIDEO_MAGIC)


def _image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` in natural order (``frame2`` before ``frame10``); raise if there are none."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise VideoError(
            f"folder {folder} contains no images ({', '.join(IMAGE_SUFFIXES)}). "
            f"Put the frames there, or pass a video file instead."
        )
    return sorted(files, key=lambda p: (_natural_key(p.name), p.name))


def _natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ``frame2`` < ``frame10``."""
    # re.split with a group alternates text and digits, always starting with text, so keys compare cleanly.
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name.lower())))


def _load_image(file: Path, folder: Path) -> np.ndarray:
    """Load one frame of an image folder as ``(h, w, 3)`` uint8 RGB, applying EXIF orientation."""
    try:
        with Image.open(file) as image:
            return np.array(ImageOps.exif_transpose(image).convert("RGB"))  # a writable copy
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoError(
            f"{file} in folder {folder} is not a readable image ({exc}). Replace or remove it."
        ) from exc


def _too_short(path: Path, total: int, num_frames: int, start: int, stride: int) -> VideoError:
    """The error for a clip with fewer frames than the sampling needs."""
    need = start + (num_frames - 1) * stride + 1
    lower = "--num-frames, --stride or --start" if start else "--num-frames or --stride"
    return VideoError(
        f"{path} has {total} frame{'' if total == 1 else 's'}; {num_frames} frame{'' if num_frames == 1 else 's'} at stride {stride} "
        f"from frame {start} need {need}. "
        f"Lower {lower}, or use a longer clip."
    )


def _corrupt(path: Path, detail: str) -> VideoError:
    """The error for a damaged video file."""
    return VideoError(
        f"{path} is truncated or corrupt: {detail}. Re-download or re-export the clip (check that it plays to the end)."
    )


def _ffmpeg_message(exc: Exception) -> str:
    """FFmpeg's reason for an error, on one line and without the file name PyAV appends."""
    message = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(message).split())


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_video(path: str | os.PathLike, frames: torch.Tensor | np.ndarray, fps: float) -> None:
    """Write ``(f, 3, h, w)`` float frames in [0, 1] (values outside are clamped) as ``.mp4`` or ``.gif``.

    * ``.mp4``: H.264 (libx264, yuv420p, CRF 18, index at the front for
      streaming). yuv420p needs even sizes, so an odd width or height gets one
      extra column or row that repeats the last one.
    * ``.gif``: Pillow, adaptive palette per frame, loops forever. GIF delays
      are whole centiseconds, so per-frame delays alternate (e.g. 30, 40 ms) to
      keep the average rate at ``fps``. Pillow merges identical consecutive
      frames into one longer frame.

    The file is written to a hidden temporary file in the same folder and moved
    into place at the end (``os.replace``), so an interrupted or failed write
    leaves any earlier file at ``path`` untouched and never a partial one. The
    parent folder is created if needed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise VideoError(f"cannot write {path}: unknown suffix {suffix!r}. Name the output .mp4 or .gif.")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) or not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"cannot write {path}: fps must be a positive number, got {fps!r}. Pass e.g. fps=8.")
    array = _frames_array(path, frames)  # (f, 3, h, w) float32

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _reserve_temp(path)
    try:
        if suffix == ".mp4":
            _write_mp4(temp, array, fps, path)
        else:
            _write_gif(temp, array, fps, path)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _frames_array(path: Path, frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Check that ``frames`` is ``(f, 3, h, w)`` floating point; return it as float32 numpy (no copy if possible)."""
    if isinstance(frames, torch.Tensor):
        if not frames.is_floating_point():
            raise VideoError(
                f"cannot write {path}: frames must be floats in [0, 1], got {frames.dtype}. Divide by 255 first."
            )
        array = frames.detach().to("cpu", torch.float32).numpy()
    elif isinstance(frames, np.ndarray):
        if not np.issubdtype(frames.dtype, np.floating):
            raise VideoError(
                f"cannot write {path}: frames must be floats in [0, 1], got {frames.dtype}. Divide by 255 first."
            )
        array = frames.astype(np.float32, copy=False)
    else:
        raise VideoError(
            f"cannot write {path}: frames must be a torch.Tensor or numpy array, got {type(frames).__name__}. "
            f"Pass an (f, 3, h, w) float tensor."
        )
    if array.ndim != 4 or array.shape[1] != 3 or 0 in array.shape:
        raise VideoError(
            f"cannot write {path}: frames must have shape (f, 3, h, w) with f, h, w >= 1, got {tuple(array.shape)}. "
            f"Permute (f, h, w, 3) frames with .permute(0, 3, 1, 2)."
        )
    return array


def _frame_uint8(path: Path, array: np.ndarray, index: int) -> np.ndarray:
    """Frame ``index`` of ``(f, 3, h, w)`` floats as ``(h, w, 3)`` uint8, clamped; raise on NaN or infinity."""
    frame = array[index]  # (3, h, w)
    if not np.isfinite(frame).all():
        raise VideoError(
            f"cannot write {path}: frame {index} contains NaN or infinite values. "
            f"The frames are broken upstream (e.g. a diverged model or fp16 overflow); fix them before saving."
        )
    return np.ascontiguousarray((np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0))


def _reserve_temp(path: Path) -> Path:
    """Create an empty, hidden, uniquely named file beside ``path`` and return its name."""
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            with open(temp, "xb"):  # exclusive create: never reuse someone else's file
                return temp
        except FileExistsError:
            continue


def _write_mp4(temp: Path, array: np.ndarray, fps: float, path: Path) -> None:
    """Encode ``(f, 3, h, w)`` frames to H.264 in ``temp`` (padding odd sizes by repeating the edge)."""
    _, _, h, w = array.shape
    pad_h, pad_w = h % 2, w % 2
    rate = Fraction(fps).limit_denominator(1001 * 1000)  # 29.97... -> 30000/1001
    with av.open(str(temp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(MP4_CRF)}
        for index in range(array.shape[0]):
            rgb = _frame_uint8(path, array, index)  # (h, w, 3)
            if pad_h or pad_w:
                rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")  # (h + pad_h, w + pad_w, 3)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)


def _write_gif(temp: Path, array: np.ndarray, fps: float, path: Path) -> None:
    """Write ``(f, 3, h, w)`` frames as a looping GIF in ``temp``."""
    images = [Image.fromarray(_frame_uint8(path, array, i)) for i in range(array.shape[0])]
    # Frame i starts at round(i * 100 / fps) centiseconds; delays are the differences, in milliseconds.
    starts = [round(i * 100 / fps) for i in range(len(images) + 1)]
    durations = [max(1, b - a) * 10 for a, b in zip(starts, starts[1:])]
    images[0].save(
        temp, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0, disposal=1
    )


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


def side_by_side(videos: list[torch.Tensor], gap: int = 4) -> torch.Tensor:
    """Place ``(f, 3, h, w_i)`` videos left to right with ``gap`` white columns between them.

    All videos must share ``f`` and ``h``; the widths may differ. Returns
    ``(f, 3, h, sum(w_i) + gap * (len(videos) - 1))`` in the first video's dtype
    and device.
    """
    if not videos:
        raise VideoError("side_by_side got no videos. Pass at least one (f, 3, h, w) tensor.")
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
        raise VideoError(f"side_by_side gap must be an integer >= 0, got {gap!r}. Pass e.g. gap=4.")
    for i, video in enumerate(videos):
        if not isinstance(video, torch.Tensor) or video.ndim != 4 or video.shape[1] != 3:
            shape = tuple(video.shape) if hasattr(video, "shape") else type(video).__name__
            raise VideoError(f"side_by_side video {i} must be an (f, 3, h, w) tensor, got {shape}. Fix its shape.")
    f, _, h, _ = videos[0].shape
    for i, video in enumerate(videos[1:], start=1):
        if video.shape[0] != f or video.shape[2] != h:
            raise VideoError(
                f"side_by_side video {i} has {video.shape[0]} frames of height {video.shape[2]} but video 0 has "
                f"{f} frames of height {h}. Read or resize them to the same frame count and height."
            )
    first = videos[0]
    white = torch.ones(f, 3, h, gap, dtype=first.dtype, device=first.device)  # (f, 3, h, gap)
    parts = []
    for i, video in enumerate(videos):
        if i:
            parts.append(white)
        parts.append(video.to(dtype=first.dtype, device=first.device))
    return torch.cat(parts, dim=3)  # (f, 3, h, total width)
