"""Tests for tuneavideo.video.

References are independent of the module under test: the known properties of
the real clips in ../shared, plain single-threaded PyAV decoding, Pillow, and
synthetic clips written here with PyAV whose pixels encode their frame index
or a known layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import VIDEOS, need_shared
from PIL import Image

from tuneavideo.video import VideoError, VideoInfo, probe_video, read_video, side_by_side, write_video

# name: (frames, fps, width, height), as published with the data
REAL_CLIPS = {
    "car-turn.mp4": (80, 10.0, 480, 480),
    "man-skiing.mp4": (91, 30000 / 1001, 718, 718),
    "man-surfing.mp4": (72, 24.0, 656, 656),
    "rabbit-watermelon.mp4": (186, 30.0, 718, 718),
}


# ------------------------------------------------------------------------------------------
# Reference helpers (plain PyAV / Pillow, no tuneavideo code)
# ------------------------------------------------------------------------------------------


def encode(path: Path, frames: np.ndarray, fps: int = 8, codec: str = "libx264", pix_fmt: str = "yuv444p",
           options: dict | None = None, rotation: int = 0) -> Path:
    """Write ``(f, h, w, 3)`` uint8 frames with PyAV; the default is lossless H.264 (qp 0, no chroma subsampling)."""
    if options is None:
        options = {"qp": "0"} if codec == "libx264" else {}
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = options
        if rotation:
            stream.set_display_rotation(rotation)
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_all(path: Path, limit: int | None = None) -> np.ndarray:
    """The first ``limit`` (default: all) frames of a video as ``(f, h, w, 3)`` uint8, decoded single-threaded."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if len(frames) == limit:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two arrays in [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def level(i: int) -> int:
    """Grey level that encodes frame index ``i`` (0..19) with a wide margin against compression."""
    return 10 + 12 * i


def index_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """``(n, h, w, 3)`` uint8 uniform grey frames; frame i has grey ``level(i)``."""
    return np.stack([np.full((h, w, 3), level(i), np.uint8) for i in range(n)])


def indices_of(video: torch.Tensor) -> list[int]:
    """Recover the frame indices of ``(f, 3, h, w)`` frames made by :func:`index_frames`."""
    means = video.mean(dim=(1, 2, 3)) * 255
    return [round((float(m) - 10) / 12) for m in means]


def assert_clean_message(error: pytest.ExceptionInfo, *needles: str) -> None:
    """The message is one line and contains every needle (path, problem, fix)."""
    message = str(error.value)
    assert "\n" not in message and message.strip() == message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


# ------------------------------------------------------------------------------------------
# Real clips
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_probe_real_clips(name):
    path = need_shared(VIDEOS / name)
    frames, fps, width, height = REAL_CLIPS[name]
    info = probe_video(path)
    assert isinstance(info, VideoInfo)
    assert (info.path, info.num_frames, info.width, info.height) == (path, frames, width, height)
    assert info.fps == pytest.approx(fps, rel=1e-6)


def test_read_real_clip_equals_plain_decode():
    path = need_shared(VIDEOS / "car-turn.mp4")
    # Native size + squash: no resampling, so the frames must be bit-identical to a plain decode.
    video = read_video(path, num_frames=6, start=3, stride=5, width=480, height=480, resize="squash")
    reference = decode_all(path, limit=29)[3::5][:6]  # the reference's range(start, total, stride)[:num_frames]
    assert video.shape == (6, 3, 480, 480) and video.dtype == torch.float32
    assert torch.equal(video, torch.from_numpy(reference).permute(0, 3, 1, 2).float() / 255)


def test_stride_and_start_match_every_other_frame():
    path = need_shared(VIDEOS / "rabbit-watermelon.mp4")
    every = read_video(path, num_frames=22, width=128, height=128)
    assert every.shape == (22, 3, 128, 128)
    assert 0 <= every.min() and every.max() <= 1
    assert torch.equal(read_video(path, num_frames=11, stride=2, width=128, height=128), every[::2])
    assert torch.equal(read_video(path, num_frames=5, start=7, stride=3, width=128, height=128), every[7::3][:5])
    assert not torch.equal(every[0], every[7])  # the clip moves, so the checks above can fail


def test_last_frames_of_real_clip():
    path = need_shared(VIDEOS / "man-surfing.mp4")
    # 72 frames: start 1, stride 10 ends exactly at frame 71, the last one.
    video = read_video(path, num_frames=8, start=1, stride=10, width=64, height=64, resize="squash")
    assert video.shape == (8, 3, 64, 64)
    with pytest.raises(VideoError) as error:
        read_video(path, num_frames=8, start=2, stride=10, width=64, height=64)
    assert_clean_message(error, str(path), "has 72 frames", "need 73", "Lower --num-frames, --stride or --start")


# ------------------------------------------------------------------------------------------
# Synthetic clips: sampling, containers, rotation, resize geometry
# ------------------------------------------------------------------------------------------


def test_sampling_indices(tmp_path):
    path = encode(tmp_path / "index.mp4", index_frames(20))
    video = read_video(path, num_frames=5, start=3, stride=4, width=64, height=48)
    assert indices_of(video) == [3, 7, 11, 15, 19]
    assert indices_of(read_video(path, num_frames=20, width=32, height=24)) == list(range(20))
    assert indices_of(read_video(path, num_frames=1, start=19, width=8, height=8)) == [19]


# suffix: (codec, pix_fmt, options)
CONTAINERS = {
    ".mp4": ("libx264", "yuv420p", {"crf": "18"}),
    ".mov": ("libx264", "yuv420p", {"crf": "18"}),
    ".mkv": ("libx264", "yuv420p", {"crf": "18"}),
    ".webm": ("libvpx-vp9", "yuv420p", {"crf": "30", "b": "0"}),
    ".avi": ("mpeg4", "yuv420p", {"qscale": "2"}),
}


@pytest.mark.parametrize("suffix", [*CONTAINERS, ".gif"])
def test_reads_every_container(tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    frames = index_frames(20)
    if suffix == ".gif":  # Pillow writes a true-colour-palette GIF: greys survive exactly
        Image.fromarray(frames[0]).save(
            path, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]], duration=125, loop=0
        )
    else:
        codec, pix_fmt, options = CONTAINERS[suffix]
        encode(path, frames, codec=codec, pix_fmt=pix_fmt, options=options)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (20, 64, 48)
    assert info.fps == pytest.approx(8.0, abs=0.4)  # GIF delays are whole centiseconds: 12 cs -> 8.33 fps
    assert indices_of(read_video(path, num_frames=20, width=32, height=24)) == list(range(20))
    assert indices_of(read_video(path, num_frames=4, start=2, stride=5, width=32, height=24)) == [2, 7, 12, 17]


def test_frame_count_without_header(tmp_path):
    path = encode(tmp_path / "clip.mkv", index_frames(13))
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska has no frame count: probe must count
    assert probe_video(path).num_frames == 13
    with pytest.raises(VideoError) as error:
        read_video(path, num_frames=14, width=64, height=48)
    assert_clean_message(error, str(path), "has 13 frames", "need 14", "Lower --num-frames or --stride")


def test_rotation_metadata_is_applied(tmp_path):
    frames = np.zeros((3, 32, 64, 3), np.uint8)  # coded 64 wide, 32 high
    frames[:, :, :8] = 255  # white band on the left edge
    path = encode(tmp_path / "phone.mp4", frames, rotation=90)  # display rotated 90 degrees counter-clockwise
    info = probe_video(path)
    assert (info.width, info.height) == (32, 64)
    video = read_video(path, num_frames=3, width=32, height=64, resize="squash")
    # Turning counter-clockwise moves the left edge to the bottom.
    assert video[:, :, -8:, :].min() > 0.9
    assert video[:, :, :-8, :].max() < 0.1


@pytest.fixture(scope="module")
def layout_clip(tmp_path_factory):
    """A 192x128 clip: 32 px white borders left and right around a 128x128 square, red left half, blue right half."""
    frame = np.full((128, 192, 3), 255, np.uint8)
    frame[:, 32:96] = (255, 0, 0)
    frame[:, 96:160] = (0, 0, 255)
    return encode(tmp_path_factory.mktemp("layout") / "layout.mp4", np.stack([frame] * 3))


def test_resize_crop_removes_borders(layout_clip):
    video = read_video(layout_clip, num_frames=3, width=96, height=96)  # default: crop
    red, green, blue = video[0]
    assert green.max() < 0.05  # no white left: the borders were cropped away
    assert red[:, :44].min() > 0.95 and blue[:, :44].max() < 0.05  # left half red
    assert blue[:, 52:].min() > 0.95 and red[:, 52:].max() < 0.05  # right half blue
    tall = read_video(layout_clip, num_frames=1, width=64, height=96)[0]  # crops to 85x128 inside the square
    assert tall[1].max() < 0.05 and tall[0, :, :28].min() > 0.95 and tall[2, :, 36:].min() > 0.95


def test_resize_squash_keeps_borders(layout_clip):
    red, green, blue = read_video(layout_clip, num_frames=1, width=96, height=96, resize="squash")[0]
    # The 192 columns map onto 96: borders become 16 columns each, the square 64 columns.
    assert green[:, :15].min() > 0.95 and green[:, 81:].min() > 0.95  # white borders stay
    assert green[:, 17:79].max() < 0.05
    assert red[:, 17:46].min() > 0.95 and blue[:, 50:79].min() > 0.95


def test_resize_pad_adds_black_bars(layout_clip):
    video = read_video(layout_clip, num_frames=1, width=96, height=96, resize="pad")[0]
    # 192x128 fits 96x96 as 96x64, centred: 16 black rows above and below.
    assert video[:, :16].max() == 0 and video[:, 80:].max() == 0
    inside = video[:, 16:80]
    assert inside[1, :, :15].min() > 0.95 and inside[1, :, 81:].min() > 0.95  # the whole frame, borders included
    assert inside[0, :, 17:46].min() > 0.95 and inside[2, :, 50:79].min() > 0.95


def test_image_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):  # frame1 .. frame12, unpadded: plain string order would put frame10 after frame1
        Image.fromarray(index_frames(12, 24, 40)[i]).save(folder / f"frame{i + 1}.png")
    (folder / "notes.txt").write_text("not a frame")
    info = probe_video(folder)
    assert (info.num_frames, info.fps, info.width, info.height) == (12, 8.0, 40, 24)
    assert probe_video(folder, image_fps=24).fps == 24.0
    video = read_video(folder, num_frames=3, start=1, stride=5, width=40, height=24, resize="squash")
    expected = torch.tensor([level(1), level(6), level(11)], dtype=torch.float32) / 255
    assert torch.equal(video, expected[:, None, None, None].expand(3, 3, 24, 40))  # PNG is lossless: exact
    with pytest.raises(VideoError) as error:
        read_video(folder, num_frames=13, width=40, height=24)
    assert_clean_message(error, str(folder), "has 12 frames", "need 13")


# ------------------------------------------------------------------------------------------
# Reading errors
# ------------------------------------------------------------------------------------------


def _text_as_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is a text file, not a video\n" * 20)
    return path, {}, ("not a video", "re-export")


def _png_file(tmp_path):
    path = tmp_path / "frame.png"
    Image.new("RGB", (16, 16)).save(path)
    return path, {}, ("single image", "folder")


def _png_renamed_mp4(tmp_path):
    path = tmp_path / "frame.mp4"
    Image.new("RGB", (16, 16)).save(path, format="PNG")
    return path, {}, ("single png image", "folder")


def _unknown_suffix(tmp_path):
    path = tmp_path / "prompt.yaml"
    path.write_text("prompt: a cat\n")
    return path, {}, ("not a video", ".mp4")


def _missing(tmp_path):
    return tmp_path / "missing.mp4", {}, ("does not exist", "Check the path")


def _empty_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    return folder, {}, ("contains no images", "Put the frames there")


def _broken_image_in_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "0.png")
    (folder / "1.png").write_bytes(b"not a png")
    return folder, {"num_frames": 2, "width": 16, "height": 16}, ("1.png", "not a readable image", "Replace or remove")


def _mixed_sizes_in_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "0.png")
    Image.new("RGB", (24, 16)).save(folder / "1.png")
    return folder, {"num_frames": 2, "width": 16, "height": 16}, ("24x16", "16x16", "must share one size")


def _half_of(name):
    def make(tmp_path):
        data = need_shared(VIDEOS / name).read_bytes()
        path = tmp_path / f"half-{name}"
        path.write_bytes(data[: len(data) // 2])
        return path, {}, ("truncated or corrupt", "Re-download or re-export")

    make.__name__ = f"_half_of_{name}"
    return make


def _too_few(tmp_path):
    return need_shared(VIDEOS / "car-turn.mp4"), {"num_frames": 24, "stride": 4}, (
        "has 80 frames", "24 frames at stride 4 from frame 0 need 93", "Lower --num-frames or --stride")


def _bad_arg(needles, **kwargs):
    def make(tmp_path):
        return encode(tmp_path / "clip.mp4", index_frames(12)), kwargs, needles

    return make


READ_ERRORS = {
    "text file named .mp4": _text_as_mp4,
    "png file": _png_file,
    "png renamed .mp4": _png_renamed_mp4,
    "unknown suffix": _unknown_suffix,
    "missing path": _missing,
    "empty folder": _empty_folder,
    "broken image in folder": _broken_image_in_folder,
    "mixed sizes in folder": _mixed_sizes_in_folder,
    # car-turn has its index first: the index points past the end of the cut file.
    "half of car-turn (index first)": _half_of("car-turn.mp4"),
    # rabbit-watermelon has its index last: the cut file cannot be opened at all.
    "half of rabbit-watermelon (index last)": _half_of("rabbit-watermelon.mp4"),
    "too few frames": _too_few,
    "width 500": _bad_arg(("width 500", "multiple of 8", "use 496 or 504"), width=500),
    "height 0": _bad_arg(("height 0", "multiple of 8", "--height"), height=0),
    "resize mode": _bad_arg(("'stretch'", "--resize crop, squash or pad"), resize="stretch"),
    "num_frames 0": _bad_arg(("num_frames", "--num-frames 1 or more"), num_frames=0),
    "stride 0": _bad_arg(("stride", "--stride 1 or more"), stride=0),
    "start -1": _bad_arg(("start", "--start 0 or more"), start=-1),
}


@pytest.mark.parametrize("case", list(READ_ERRORS))
def test_read_errors(tmp_path, case):
    path, kwargs, needles = READ_ERRORS[case](tmp_path)
    kwargs = {"num_frames": 8, "width": 64, "height": 64, **kwargs}
    with pytest.raises(VideoError) as error:
        read_video(path, **kwargs)
    assert_clean_message(error, str(path), *needles)
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("case", ["text file named .mp4", "png file", "missing path", "empty folder",
                                  "half of car-turn (index first)", "half of rabbit-watermelon (index last)"])
def test_probe_errors(tmp_path, case):
    path, _, needles = READ_ERRORS[case](tmp_path)
    with pytest.raises(VideoError) as error:
        probe_video(path)
    assert_clean_message(error, str(path), *needles)


def test_truncated_avi_fails_while_decoding(tmp_path):
    # AVI keeps its frame count in the header, so the cut only shows when a packet comes up short.
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (30, 48, 64, 3), dtype=np.uint8)  # incompressible: bytes spread evenly over frames
    whole = encode(tmp_path / "whole.avi", noise, codec="mpeg4", pix_fmt="yuv420p", options={"qscale": "2"})
    path = tmp_path / "half.avi"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert probe_video(path).num_frames == 30  # the header still says 30
    with pytest.raises(VideoError) as error:
        read_video(path, num_frames=30, width=64, height=48)
    assert_clean_message(error, str(path), "truncated or corrupt", "Re-download or re-export")


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------


def smooth_clip(f: int = 16, h: int = 48, w: int = 64) -> torch.Tensor:
    """``(f, 3, h, w)`` smooth moving gradients in [0, 1]."""
    t = torch.arange(f, dtype=torch.float32)[:, None, None]
    y = torch.linspace(0, 1, h)[None, :, None]
    x = torch.linspace(0, 1, w)[None, None, :]
    red = 0.5 + 0.4 * torch.sin(2 * math.pi * (x + t / f))
    green = 0.2 + 0.6 * y
    blue = 0.5 + 0.3 * torch.cos(2 * math.pi * (y + x + t / (2 * f)))
    return torch.stack([c.expand(f, h, w) for c in (red, green, blue)], dim=1)


def test_mp4_round_trip(tmp_path):
    clip = smooth_clip()
    path = tmp_path / "out.mp4"
    write_video(path, clip, fps=12)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.format.name) == ("h264", "yuv420p")
    info = probe_video(path)
    assert (info.num_frames, info.fps, info.width, info.height) == (16, 12.0, 64, 48)
    decoded = decode_all(path).transpose(0, 3, 1, 2) / 255  # (f, 3, h, w)
    assert psnr(decoded, clip.numpy()) > 30
    assert torch.equal(read_video(path, num_frames=16, width=64, height=48), torch.from_numpy(decoded).float())
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_mp4_accepts_numpy_and_clamps(tmp_path):
    frames = np.zeros((4, 3, 16, 16), np.float64)
    frames[:, :, :, :8] = -3.0  # clamps to black
    frames[:, :, :, 8:] = 7.0  # clamps to white
    path = tmp_path / "clamped.mp4"
    write_video(path, frames, fps=8)
    decoded = decode_all(path) / 255  # (f, h, w, 3)
    assert decoded[:, :, :6].max() < 0.05 and decoded[:, :, 10:].min() > 0.95


def test_mp4_odd_size_is_padded_by_repeating_the_edge(tmp_path):
    clip = smooth_clip(4, 45, 63)
    path = tmp_path / "odd.mp4"
    write_video(path, clip, fps=8)
    info = probe_video(path)
    assert (info.width, info.height) == (64, 46)
    decoded = decode_all(path).transpose(0, 3, 1, 2) / 255  # (f, 3, 46, 64)
    assert psnr(decoded[:, :, :45, :63], clip.numpy()) > 30
    assert psnr(decoded[:, :, :45, 63], clip.numpy()[:, :, :, 62]) > 30  # extra column repeats the last


def test_gif_round_trip(tmp_path):
    clip = smooth_clip(10)
    path = tmp_path / "out.gif"
    write_video(path, clip, fps=10)
    with Image.open(path) as gif:
        assert (gif.n_frames, gif.size, gif.info["loop"]) == (10, (64, 48), 0)
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert durations == [100] * 10
    video = read_video(path, num_frames=10, width=64, height=48)
    assert psnr(video.numpy(), clip.numpy()) > 25  # 256-colour palette per frame


def test_gif_delays_keep_the_average_rate(tmp_path):
    path = tmp_path / "fast.gif"
    write_video(path, smooth_clip(30, 16, 16), fps=30)
    with Image.open(path) as gif:
        total = 0
        for i in range(gif.n_frames):
            gif.seek(i)
            total += gif.info["duration"]
        assert gif.n_frames == 30
    assert total == 1000  # 30 frames at 30 fps: one second, although 33.3 ms is not a whole centisecond


def test_failed_write_leaves_target_untouched(tmp_path):
    clip = smooth_clip(8)
    clip[5] = float("nan")  # found while encoding, after the temporary file exists and frames 0-4 are written
    old = tmp_path / "old.mp4"
    old.write_bytes(b"previous result")
    for path in (old, tmp_path / "new.mp4", tmp_path / "new.gif"):
        with pytest.raises(VideoError) as error:
            write_video(path, clip, fps=8)
        assert_clean_message(error, str(path), "frame 5", "NaN")
    assert old.read_bytes() == b"previous result"
    assert sorted(tmp_path.iterdir()) == [old]  # no new file, no temporary left


@pytest.mark.parametrize(
    ("name", "make_frames", "fps", "needles"),
    [
        ("out.avi", lambda clip: clip, 8, ("'.avi'", ".mp4 or .gif")),
        ("out.mp4", lambda clip: clip.permute(0, 2, 3, 1), 8, ("(2, 48, 64, 3)", "(f, 3, h, w)", "permute")),
        ("out.mp4", lambda clip: (clip * 255).to(torch.uint8), 8, ("torch.uint8", "Divide by 255")),
        ("out.gif", lambda clip: clip, 0, ("fps", "positive")),
        ("out.mp4", lambda clip: clip[:0], 8, ("(0, 3, 48, 64)",)),
    ],
)
def test_write_errors(tmp_path, name, make_frames, fps, needles):
    path = tmp_path / name
    with pytest.raises(VideoError) as error:
        write_video(path, make_frames(smooth_clip(2)), fps=fps)
    assert_clean_message(error, str(path), *needles)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# side_by_side
# ------------------------------------------------------------------------------------------


def test_side_by_side():
    a = torch.rand(3, 3, 8, 5)
    b = torch.rand(3, 3, 8, 6)
    out = side_by_side([a, b], gap=4)
    assert out.shape == (3, 3, 8, 15)
    assert torch.equal(out[..., :5], a) and torch.equal(out[..., 9:], b)
    assert torch.equal(out[..., 5:9], torch.ones(3, 3, 8, 4))  # white gap
    assert torch.equal(side_by_side([a, b, a], gap=0), torch.cat([a, b, a], dim=3))
    assert torch.equal(side_by_side([a]), a)


@pytest.mark.parametrize("shapes", [[(3, 3, 8, 5), (4, 3, 8, 5)], [(3, 3, 8, 5), (3, 3, 9, 5)], [(3, 8, 5)], []])
def test_side_by_side_rejects_mismatches(shapes):
    with pytest.raises(VideoError) as error:
        side_by_side([torch.rand(shape) for shape in shapes])
    assert_clean_message(error)
