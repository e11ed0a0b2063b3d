"""Tests of the toy world: the renderer (determinism, geometry, paths, captions) and the
detector (exact on renders, robust on perturbed renders, consistent with tracks)."""

from __future__ import annotations

import ast
import io
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tuneavideo.toyworld import detect, render
from tuneavideo.toyworld import (
    BACKGROUNDS,
    CAPTION_TEMPLATES,
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
    detect_frame,
    detect_video,
    fill_template,
    object_track,
    random_clip,
    random_scene,
    render_background,
    render_clip,
    render_scene,
    scene_at,
    scene_centre_px,
)

ATTRIBUTES = ("shape", "colour", "size", "background")


# --------------------------------------------------------------------------- helpers


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, 3) float image, reflected edges."""
    radius = int(math.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        length = out.shape[axis]
        out = sum(
            k * np.take(padded, np.arange(i, i + length), axis=axis) for i, k in enumerate(kernel)
        )
    return out


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip (with the usual 4:2:0 chroma subsampling)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def perturb(image: np.ndarray, rng: np.random.Generator, kinds: tuple[str, ...]) -> np.ndarray:
    """Imitate an imperfect model sample: blur (sigma 1 px), colour cast (gain +-10%,
    offset +-12 per channel), Gaussian noise (sigma 10/255), JPEG quality 60."""
    out = image.astype(np.float64)
    if "blur" in kinds:
        out = gaussian_blur(out, 1.0)
    if "cast" in kinds:
        out = out * rng.uniform(0.9, 1.1, 3) + rng.uniform(-12, 12, 3)
    if "noise" in kinds:
        out = out + rng.normal(0.0, 10.0, out.shape)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if "jpeg" in kinds:
        out = jpeg(out, 60)
    return out


def score(scenes, frames, size: int = 64):
    """Per-attribute accuracy and centroid errors (px) of the detector on frames."""
    correct = dict.fromkeys(ATTRIBUTES, 0)
    errors = []
    for scene, frame in zip(scenes, frames):
        found = detect_frame(frame)
        for name in ATTRIBUTES:
            correct[name] += getattr(found, name) == getattr(scene, name)
        if found.centroid is None:
            errors.append(math.inf)
        else:
            errors.append(math.dist(found.centroid, scene_centre_px(scene, size)))
    accuracy = {name: count / len(scenes) for name, count in correct.items()}
    return accuracy, np.asarray(errors)


def border_band(size: int) -> np.ndarray:
    """Mask of the frame's outer MARGIN band (minus a pixel of antialiasing)."""
    width = int(math.floor(MARGIN * size)) - 1
    band = np.zeros((size, size), dtype=bool)
    if width > 0:
        band[:width] = band[-width:] = True
        band[:, :width] = band[:, -width:] = True
    return band


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_sizes_and_separation():
    assert len(SHAPES) >= 4 and len(COLOURS) == 6 and len(SIZES) == 2 and len(BACKGROUNDS) >= 5
    assert {"right", "left", "up", "down", "diagonal", "bouncing", "circling"} <= set(PATHS)
    palette = np.asarray(list(COLOURS.values()), dtype=float)
    gaps = np.linalg.norm(palette[:, None] - palette[None], axis=2)
    assert gaps[~np.eye(len(palette), dtype=bool)].min() >= 80
    for name in BACKGROUNDS:
        texture = render_background(name, 64).reshape(-1, 3)
        for rgb in COLOURS.values():
            # every object colour stands out from every pixel of every background
            assert np.linalg.norm(texture - np.asarray(rgb), axis=1).min() >= 100, (name, rgb)


def test_every_outline_stands_out_from_its_background():
    for name in BACKGROUNDS:
        texture = render_background(name, 64).reshape(-1, 3)
        assert np.linalg.norm(texture - np.asarray(render.OUTLINES[name]), axis=1).min() >= 100, name


@pytest.mark.parametrize("shape", SHAPES)
def test_objects_are_filled_inside_an_outline_of_constant_width(shape):
    width = render.OUTLINE_WIDTH * 64
    for background in ("blue sky", "black night"):
        scene = Scene(shape, "red", "large", background, 0.5, 0.55)
        image = render_scene(scene).astype(float)
        inside = render.object_coverage(scene) >= 0.5
        # distance of each pixel centre to the nearest pixel centre outside the shape, by brute force
        rows, cols = np.nonzero(inside)
        out_rows, out_cols = np.nonzero(~inside)
        depth = np.sqrt((rows[:, None] - out_rows[None]) ** 2 + (cols[:, None] - out_cols[None]) ** 2).min(axis=1)
        pixels = image[rows, cols]
        is_outline = np.linalg.norm(pixels - render.OUTLINES[background], axis=1) < 10
        is_fill = np.linalg.norm(pixels - COLOURS["red"], axis=1) < 10
        assert is_outline.sum() >= 20 and is_fill.sum() >= 20, (shape, background)
        # the outline hugs the edge and the fill keeps off it, on every side of every shape
        assert depth[is_outline].max() <= width + 1.0, (shape, background, depth[is_outline].max())
        assert depth[is_fill].min() >= width, (shape, background, depth[is_fill].min())


def test_all_combinations_render():
    for shape, colour, size, background in itertools.product(SHAPES, COLOURS, SIZES, BACKGROUNDS):
        image = render_scene(Scene(shape, colour, size, background))
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8


# --------------------------------------------------------------------------- rendering


def test_render_size_and_float_output():
    scene = random_scene(3)
    assert render_scene(scene, size=96).shape == (96, 96, 3)
    as_uint8 = render_scene(scene)
    as_float = render_scene(scene, as_float=True)
    assert as_float.dtype == np.float32 and 0.0 <= as_float.min() and as_float.max() <= 1.0
    np.testing.assert_allclose(as_float * 255.0, as_uint8, atol=1e-3)


def test_scenes_are_deterministic_from_seed():
    assert random_scene(7) == random_scene(7)
    np.testing.assert_array_equal(render_scene(random_scene(7)), render_scene(random_scene(7)))
    images = [render_scene(random_scene(seed)).tobytes() for seed in range(30)]
    assert len(set(images)) == len(images)
    # a Generator gives the same stream as its seed
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    assert [random_scene(rng_a) for _ in range(5)] == [random_scene(rng_b) for _ in range(5)]


def test_random_scenes_cover_the_vocabulary():
    scenes = [random_scene(seed) for seed in range(400)]
    for name, table in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("background", BACKGROUNDS)):
        assert {getattr(s, name) for s in scenes} == set(table)


def test_objects_stay_inside_the_frame():
    for seed in range(150):
        scene = random_scene(seed)
        for size in (64, 128):
            image = render_scene(scene, size).astype(int)
            background = np.rint(render_background(scene.background, size)).astype(int)
            touched = np.any(image != background, axis=2)
            assert touched.any()
            assert not touched[border_band(size)].any(), scene
    with pytest.raises(ValueError):
        Scene("circle", "red", "large", "blue sky", x=0.05, y=0.5)
    with pytest.raises(ValueError):
        Scene("hexagon", "red", "large", "blue sky")


def test_pinned_attributes():
    scene = random_scene(5, background="white snow", shape="triangle")
    assert scene.background == "white snow" and scene.shape == "triangle"
    clip = random_clip(5, path="circling", colour="blue")
    assert clip.path == "circling" and clip.colour == "blue"


# --------------------------------------------------------------------------- clips


def test_clip_frame_counts_and_determinism():
    counts = {random_clip(seed).num_frames for seed in range(200)}
    assert min(counts) >= MIN_FRAMES == 8 and max(counts) <= MAX_FRAMES == 24 and len(counts) > 10
    for frames in (MIN_FRAMES, 16, MAX_FRAMES):
        clip = random_clip(frames, num_frames=frames)
        video = render_clip(clip)
        assert video.shape == (frames, 64, 64, 3) and video.dtype == np.uint8
        assert object_track(clip).shape == (frames, 2)
    assert random_clip(3) == random_clip(3)
    np.testing.assert_array_equal(render_clip(random_clip(3)), render_clip(random_clip(3)))
    assert not np.array_equal(render_clip(random_clip(3, num_frames=8)), render_clip(random_clip(4, num_frames=8)))


def test_clip_frames_are_the_scenes_on_the_track():
    clip = random_clip(21)
    video = render_clip(clip)
    track = object_track(clip)
    for index in (0, clip.num_frames // 2, clip.num_frames - 1):
        scene = scene_at(clip, index)
        np.testing.assert_array_equal(video[index], render_scene(scene))
        np.testing.assert_allclose(track[index], scene_centre_px(scene))
    np.testing.assert_allclose(object_track(clip, size=128), clip_positions(clip) * 128 - 0.5)


def test_clip_objects_stay_inside_the_frame():
    for seed in range(40):
        clip = random_clip(seed)
        background = np.rint(render_background(clip.background, 64)).astype(int)
        touched = np.any(render_clip(clip).astype(int) != background, axis=3)
        assert touched.reshape(clip.num_frames, -1).any(axis=1).all()
        assert not touched[:, border_band(64)].any(), clip


@pytest.mark.parametrize("shape,size", [("circle", "small"), ("triangle", "large"), ("cross", "large")])
def test_tracks_follow_their_paths(shape, size):
    def track(path, **params):
        return clip_positions(Clip(shape, "red", size, "green grass", path, num_frames=12, **params))

    (x_lo, x_hi), (y_lo, y_hi) = centre_range(shape, size)
    right, left = track("right", lane=0.3), track("left", lane=0.3)
    assert np.all(np.diff(right[:, 0]) > 0) and np.ptp(right[:, 1]) == 0
    assert np.all(np.diff(left[:, 0]) < 0) and np.ptp(left[:, 1]) == 0
    np.testing.assert_allclose([right[0, 0], right[-1, 0]], [x_lo, x_hi])
    down, up = track("down", lane=0.8), track("up", lane=0.8)
    assert np.all(np.diff(down[:, 1]) > 0) and np.ptp(down[:, 0]) == 0
    assert np.all(np.diff(up[:, 1]) < 0) and np.ptp(up[:, 0]) == 0
    partial = track("right", travel=0.5, phase=1.0)
    np.testing.assert_allclose(partial[[0, -1], 0], [x_lo + 0.5 * (x_hi - x_lo), x_hi])

    down_right, up_right = track("diagonal", lane=0.2), track("diagonal", lane=0.9)
    assert np.all(np.diff(down_right, axis=0) > 0)
    assert np.all(np.diff(up_right[:, 0]) > 0) and np.all(np.diff(up_right[:, 1]) < 0)

    bounce = track("bouncing", lane=0.5, travel=1.0)
    assert np.ptp(bounce[:, 0]) == 0
    assert bounce[:, 1].max() <= y_hi + 1e-12 and bounce[:, 1].min() >= y_lo - 1e-12
    assert np.ptp(bounce[:, 1]) > 0.7 * (y_hi - y_lo)
    np.testing.assert_allclose(bounce[0, 1], y_hi)  # phase 0 starts on the ground

    circle = track("circling", travel=1.0, phase=0.25)
    centre = np.array([(x_lo + x_hi) / 2, (y_lo + y_hi) / 2])
    radii = np.linalg.norm(circle - centre, axis=1)
    np.testing.assert_allclose(radii, 0.5 * min(x_hi - x_lo, y_hi - y_lo))
    angles = np.unwrap(np.arctan2(*(circle - centre).T[::-1]))
    np.testing.assert_allclose(np.diff(angles), 2 * math.pi / 12)


def test_clip_validation():
    with pytest.raises(ValueError):
        Clip("circle", "red", "small", "blue sky", "zigzag")
    with pytest.raises(ValueError):
        Clip("circle", "red", "small", "blue sky", "right", num_frames=0)
    with pytest.raises(ValueError):
        Clip("circle", "red", "small", "blue sky", "right", lane=1.5)


# --------------------------------------------------------------------------- captions


def test_captions():
    scene = Scene("circle", "red", "small", "green grass")
    captions = [caption(scene, i) for i in range(len(CAPTION_TEMPLATES))]
    assert captions[0] == "a red circle on green grass"
    assert "a small red circle on green grass" in captions
    assert "green grass with a small red circle" in captions
    assert len(set(captions)) == len(captions)
    assert caption(scene, len(CAPTION_TEMPLATES)) == captions[0]
    assert any("small" in text for text in captions) and not all("small" in text for text in captions)

    clip = Clip("circle", "red", "small", "green grass", "right")
    assert clip_caption(clip) == "a red circle moving right on green grass"
    circling = Clip("cross", "blue", "large", "blue sky", "circling")
    assert clip_caption(circling, 1) == "a large blue cross circling on blue sky"

    words = all_caption_words()
    for seed in range(100):
        scene, clip = random_scene(seed), random_clip(seed)
        for index in range(6):
            assert set(caption(scene, index).split()) <= words
            assert set(clip_caption(clip, index).split()) <= words
    assert {"a", "an", "on", "with", "small", "large", "moving", "right"} <= words
    assert all(" " not in word for word in words)


def test_captions_use_an_before_a_vowel():
    orange = Scene("square", "orange", "large", "white snow")
    assert caption(orange, 0) == "an orange square on white snow"
    assert caption(orange, 1) == "a large orange square on white snow"
    assert caption(orange, 3) == "white snow with an orange square"
    assert clip_caption(Clip("cross", "orange", "small", "grey road", "bouncing")) == "an orange cross bouncing on grey road"
    # only the word "a" changes
    assert fill_template("{x} {y}", x="sofa", y="orange") == "sofa orange"
    assert fill_template("a {x}", x="amber") == "an amber" and fill_template("a {x}", x="blue") == "a blue"
    assert fill_template("{x} with a {y}", x="sandy beach", y="orange") == "sandy beach with an orange"


# --------------------------------------------------------------------------- detector


def test_detector_is_exact_on_renders():
    scenes = [random_scene(10_000 + seed) for seed in range(400)]
    accuracy, errors = score(scenes, [render_scene(s) for s in scenes])
    assert all(value >= 0.99 for value in accuracy.values()), accuracy
    assert errors.max() < 1.0, errors.max()


def test_detector_at_other_resolutions():
    for size in (48, 128):
        scenes = [random_scene(20_000 + seed) for seed in range(60)]
        accuracy, errors = score(scenes, [render_scene(s, size) for s in scenes], size)
        assert all(value >= 0.99 for value in accuracy.values()), (size, accuracy)
        assert errors.max() < 1.0, (size, errors.max())


@pytest.mark.parametrize(
    "kinds,count",
    [
        (("blur",), 120),
        (("noise",), 120),
        (("jpeg",), 120),
        (("blur", "cast", "noise", "jpeg"), 300),
    ],
)
def test_detector_is_robust_to_perturbations(kinds, count):
    rng = np.random.default_rng(len(kinds) * 1000 + count)
    scenes = [random_scene(rng) for _ in range(count)]
    frames = [perturb(render_scene(s), rng, kinds) for s in scenes]
    accuracy, errors = score(scenes, frames)
    assert all(value >= 0.95 for value in accuracy.values()), (kinds, accuracy)
    assert np.median(errors) < 0.5 and np.mean(errors < 1.0) >= 0.95, (kinds, errors.max())


def test_no_outline_draws_the_flat_world_exactly(monkeypatch):
    """With the outline's width at 0 every pixel is the background and the object's colour mixed by the share of the
    pixel the object covers, and no pixel shows the outline's colour (an earlier compositing tinted the antialiased
    edge with it, by up to 58 units)."""
    monkeypatch.setattr(render, "OUTLINE_WIDTH", 0.0)
    for seed in range(50):
        scene = render.random_scene(seed)
        coverage = render.object_coverage(scene)[..., None]
        expected = (render.render_background(scene.background) * (1 - coverage)
                    + np.asarray(render.COLOURS[scene.colour], dtype=np.float64) * coverage)
        assert np.abs(render.render_scene(scene) - expected).max() <= 0.5 + 1e-6, scene


@pytest.mark.parametrize("width", [0.0, 1 / 64, 1.5 / 64])
def test_detector_reads_objects_with_thinner_outlines_or_none(monkeypatch, width):
    """Flat objects (no outline: what a generated image that lost it shows) and thinner outlines than the world's
    are read as well as the world's objects, exact and perturbed."""
    monkeypatch.setattr(render, "OUTLINE_WIDTH", width)
    scenes = [random_scene(40_000 + seed) for seed in range(300)]
    accuracy, errors = score(scenes, [render_scene(s) for s in scenes])
    assert all(value >= 0.99 for value in accuracy.values()), (width, accuracy)
    assert errors.max() < 1.0, (width, errors.max())
    rng = np.random.default_rng(41)
    frames = [perturb(render_scene(s), rng, ("blur", "cast", "noise", "jpeg")) for s in scenes]
    accuracy, errors = score(scenes, frames)
    assert all(value >= 0.95 for value in accuracy.values()), (width, accuracy)
    assert np.median(errors) < 0.5 and np.mean(errors < 1.0) >= 0.95, (width, errors.max())


@pytest.mark.parametrize("width", [2 / 64, 1.5 / 64])
def test_detector_reads_the_colour_of_small_crosses(monkeypatch, width):
    """A small cross's fill is only a few pixels wide inside its outline: every colour on every background, at
    several positions (so at several sub-pixel phases), is read."""
    monkeypatch.setattr(render, "OUTLINE_WIDTH", width)
    rng = np.random.default_rng(42)
    scenes = [
        random_scene(rng, shape="cross", size="small", colour=colour, background=background)
        for colour, background in itertools.product(COLOURS, BACKGROUNDS)
        for _ in range(5)
    ]
    accuracy, errors = score(scenes, [render_scene(s) for s in scenes])
    assert all(value >= 0.99 for value in accuracy.values()), (width, accuracy)
    assert errors.max() < 1.0, (width, errors.max())


@pytest.mark.parametrize("outline", ["mid grey", "half strength"])
def test_detector_reads_objects_whose_outline_is_not_the_tables(monkeypatch, outline):
    """A generated image can draw the outline in another colour than :data:`render.OUTLINES` gives, or weakly: in
    a mid grey on every background, or halfway between the table's colour and the background's."""
    if outline == "mid grey":
        colours = dict.fromkeys(render.OUTLINES, (128, 128, 128))
    else:
        colours = {
            name: tuple(int(round((k + (b + a) / 2) / 2)) for k, b, a in zip(render.OUTLINES[name], *BACKGROUNDS[name]))
            for name in render.OUTLINES
        }
    monkeypatch.setattr(render, "OUTLINES", colours)
    scenes = [random_scene(45_000 + seed) for seed in range(400)]
    accuracy, errors = score(scenes, [render_scene(s) for s in scenes])
    assert all(value >= 0.95 for value in accuracy.values()), (outline, accuracy)
    assert np.mean(errors < 1.0) >= 0.95, (outline, errors.max())


def test_detector_follows_clip_tracks():
    for seed in range(12):
        clip = random_clip(30_000 + seed, num_frames=10)
        detections = detect_video(render_clip(clip))
        assert len(detections) == clip.num_frames
        for found, truth in zip(detections, object_track(clip)):
            assert (found.shape, found.colour, found.size, found.background) == (
                clip.shape, clip.colour, clip.size, clip.background,
            )
            assert math.dist(found.centroid, truth) < 1.0, (clip, found.centroid, truth)
            assert found.mask[int(round(truth[1])), int(round(truth[0]))]


def test_detector_accepts_float_frames():
    scene = random_scene(99)
    from_uint8 = detect_frame(render_scene(scene))
    from_float = detect_frame(render_scene(scene, as_float=True))
    assert from_uint8.attributes() == from_float.attributes() == {
        "shape": scene.shape, "colour": scene.colour, "size": scene.size, "background": scene.background,
    }
    np.testing.assert_allclose(from_uint8.centroid, from_float.centroid, atol=1e-6)
    np.testing.assert_array_equal(from_uint8.mask, from_float.mask)


def test_detector_reports_nothing_on_empty_frames():
    for name in BACKGROUNDS:
        found = detect_frame(np.rint(render_background(name, 64)).astype(np.uint8))
        assert not found.found and found.background == name
        assert found.shape is found.colour is found.size is found.centroid is None
        assert found.mask.shape == (64, 64) and not found.mask.any()
    for frame in (np.zeros((32, 32, 3), np.uint8), np.full((64, 64, 3), 0.5, np.float32)):
        assert detect_frame(frame).shape is None
    noisy = np.clip(
        render_background("grey road", 64) + np.random.default_rng(0).normal(0, 10, (64, 64, 3)), 0, 255
    ).astype(np.uint8)
    assert not detect_frame(noisy).found
    with pytest.raises(ValueError):
        detect_frame(np.zeros((64, 64), np.uint8))


def test_detector_geometry_table_matches_renders():
    for shape, size in itertools.product(SHAPES, SIZES):
        found = detect_frame(render_scene(Scene(shape, "blue", size, "white snow"), size=128))
        assert found.features["radius"] == pytest.approx(SIZES[size], rel=0.03), (shape, size)


def test_detector_uses_only_vocabulary_tables_of_the_renderer():
    tree = ast.parse(Path(detect.__file__).read_text())
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and "render" in node.module
        for alias in node.names
    ]
    assert imported and all(name.isupper() for name in imported), imported
    assert not any(
        isinstance(node, ast.Import) and any("render" in alias.name for alias in node.names)
        for node in ast.walk(tree)
    )
    assert render.SHAPES == SHAPES


def test_edit_scores_against_hand_computed_values():
    """An edit that shifts the object 3 px right and loses it in one frame of 8: motion error counts that frame as
    the frame diagonal, the found-frames error does not."""
    from tuneavideo.toyworld.metrics import score_edit

    source = np.stack([render_scene(Scene("circle", "red", "large", "blue sky", x, 0.5)) for x in np.linspace(0.3, 0.6, 8)])
    shifted = np.stack([render_scene(Scene("circle", "blue", "large", "blue sky", x + 3 / 64, 0.5))
                        for x in np.linspace(0.3, 0.6, 8)])
    shifted[5] = np.clip(np.rint(render_background("blue sky")), 0, 255).astype(np.uint8)
    score = score_edit(source, shifted, {"colour": "blue"}, {"shape": "circle", "colour": "red", "background": "blue sky"})
    assert score.motion_error_found == pytest.approx(3.0, abs=0.2)
    assert score.motion_error == pytest.approx((7 * score.motion_error_found + math.hypot(64, 64)) / 8)
    assert score.detected == pytest.approx(7 / 8) and score.alignment == pytest.approx(7 / 8)
    assert score.preservation == pytest.approx(7 / 8)  # the empty frame has no shape
    nothing = np.repeat(shifted[5:6], 8, axis=0)
    assert math.isnan(score_edit(source, nothing, {"colour": "blue"}, {"shape": "circle", "colour": "red",
                                                                        "background": "blue sky"}).motion_error_found)


def test_frames_off_the_majority_are_the_rendered_ones():
    """A large red circle on blue sky for 8 frames, frame 2 rendered blue, frame 4 small and frame 6 a square on white
    snow: exactly those frames and attributes are off the majority, and consistency, which leaves size out, is the
    share of the frames other than 2 and 6."""
    from tuneavideo.toyworld.metrics import off_majority, score_edit

    scenes = [Scene("circle", "red", "large", "blue sky", x, 0.5) for x in np.linspace(0.3, 0.6, 8)]
    scenes[2] = Scene("circle", "blue", "large", "blue sky", scenes[2].x, 0.5)
    scenes[4] = Scene("circle", "red", "small", "blue sky", scenes[4].x, 0.5)
    scenes[6] = Scene("square", "red", "large", "white snow", scenes[6].x, 0.5)
    video = np.stack([render_scene(scene) for scene in scenes])
    flips = off_majority(detect.detect_video(video))
    assert flips == [{"frame": 2, "attribute": "colour", "majority": "red", "value": "blue"},
                     {"frame": 4, "attribute": "size", "majority": "large", "value": "small"},
                     {"frame": 6, "attribute": "shape", "majority": "circle", "value": "square"},
                     {"frame": 6, "attribute": "background", "majority": "blue sky", "value": "white snow"}]
    attributes = {"shape": "circle", "colour": "red", "background": "blue sky"}
    assert score_edit(video, video, {}, attributes).consistency == pytest.approx(6 / 8)


@pytest.mark.parametrize("axis", [0, 1])
def test_shape_features_of_a_one_pixel_streak_are_finite(axis):
    # a generated frame can hold an object region one pixel wide: no spread along one axis (this divided by zero)
    coverage = np.zeros((12, 12))
    coverage[(slice(2, 10), 5) if axis == 0 else (5, slice(2, 10))] = 1.0
    features = detect.shape_features(coverage, coverage > 0.5)
    assert all(math.isfinite(v) for v in features.values())
    assert detect.classify_shape(features) in render.SHAPES


def test_object_coverage_is_the_shapes_area_where_the_render_shows_it():
    """The coverage of a large circle sums to its area, pi r^2, and is non-zero exactly where the render differs
    from the bare background."""
    import math

    from tuneavideo.toyworld.render import SIZES, Scene, object_coverage, render_background, render_scene

    scene = Scene(shape="circle", colour="red", size="large", background="white snow", x=0.4, y=0.55)
    coverage = object_coverage(scene, 64)
    radius = SIZES["large"] * 64
    assert abs(coverage.sum() - math.pi * radius**2) < 0.01 * math.pi * radius**2
    changed = np.abs(render_scene(scene, 64).astype(float) - np.rint(render_background("white snow", 64))).max(-1) > 0
    assert changed[coverage >= 0.05].all() and not changed[coverage == 0].any()


def test_scores_of_frames_that_are_not_square_leave_intact_unmeasured():
    # `tuneavideo eval` scores a run's edits with score_edit at the run's own size; the world renders squares only
    from tuneavideo.toyworld.metrics import score_edit

    clip = Clip(shape="circle", colour="red", size="large", background="blue sky", path="right", num_frames=4)
    video = render.render_clip(clip, size=64)
    attributes = {"shape": "circle", "colour": "red", "background": "blue sky"}
    assert score_edit(video, video, {}, attributes).intact == 1.0
    wide = score_edit(video[:, :48], video[:, :48], {}, attributes)
    assert math.isnan(wide.intact) and wide.alignment == 1.0


def test_box_blur_is_the_mean_of_each_neighbourhood_with_the_edges_repeated():
    from tuneavideo.toyworld.metrics import box_blur

    image = np.random.default_rng(3).integers(0, 256, (9, 7, 3)).astype(np.uint8)
    padded = np.pad(image.astype(float), ((2, 2), (2, 2), (0, 0)), mode="edge")
    naive = np.array([[padded[i:i + 5, j:j + 5].mean(axis=(0, 1)) for j in range(7)] for i in range(9)])
    assert np.allclose(box_blur(image, 5), naive)
    assert np.array_equal(box_blur(image, 1), image.astype(float))


def test_fidelity_tells_clean_drawings_from_broken_frames():
    """Renders of scenes, sharp or blurred and noisy as a model's samples are, are intact; the same frames with a
    second object drawn in, or with the object turned into a rainbow texture, are read as an object and are broken."""
    from tuneavideo.toyworld.metrics import fidelity, intact

    rng = np.random.default_rng(0)
    scenes = [render.random_scene(rng) for _ in range(24)]
    for scene in scenes:
        frame = render_scene(scene)
        value = fidelity(frame, detect.detect_frame(frame))
        assert value is not None and value >= 40, (scene, value)  # far above BROKEN_BELOW_DB
        smeared = np.asarray(Image.fromarray(frame).resize((32, 32), Image.BILINEAR).resize((64, 64), Image.BILINEAR))
        noisy = np.clip(smeared + rng.normal(0, 6, smeared.shape), 0, 255).astype(np.uint8)
        assert intact(fidelity(noisy, detect.detect_frame(noisy))), scene
        as_float = noisy.astype(np.float32) / 255  # a pipeline's output_type="np"
        assert fidelity(as_float, detect.detect_frame(as_float)) == pytest.approx(fidelity(noisy, detect.detect_frame(noisy)))

    frame = render_scene(Scene("circle", "red", "large", "green grass", 0.3, 0.3))
    second = render_scene(Scene("circle", "red", "large", "green grass", 0.7, 0.7))
    object_pixels = (second != np.rint(render.render_background("green grass", 64))).any(-1, keepdims=True)
    frame = np.where(object_pixels, second, frame)
    found = detect.detect_frame(frame)
    assert found.found and not intact(fidelity(frame, found))

    textured = render_scene(Scene("triangle", "orange", "large", "sandy beach", 0.5, 0.5))
    rows, cols = np.mgrid[:64, :64]
    hue = ((rows + 2 * cols) % 12) / 12.0
    rainbow = (255 * np.stack([np.abs(np.sin(np.pi * (hue + k / 3))) for k in range(3)], -1)).astype(np.uint8)
    inside = (np.abs(rows - 32) < 18) & (np.abs(cols - 32) < 18)
    textured[inside] = rainbow[inside]
    found = detect.detect_frame(textured)
    assert found.found and not intact(fidelity(textured, found))
