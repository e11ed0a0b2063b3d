"""``benchmarks/lost_objects.py``'s norm with its statistics chosen per frame or per video, against
``torch.nn.GroupNorm`` frame by frame, the method's pooled norm, and values computed by hand."""

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def probed():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from lost_objects import ProbedNorm
    finally:
        sys.path.remove(str(BENCHMARKS))
    return ProbedNorm


def _norm(cls, groups=2, channels=4, frames=3):
    torch.manual_seed(0)
    image = torch.nn.GroupNorm(groups, channels)
    with torch.no_grad():
        image.weight.normal_()
        image.bias.normal_()
    norm = cls.__new__(cls)
    norm.__dict__.update(image.__dict__)
    norm.num_frames = frames
    return image, norm


def test_per_frame_and_pooled_modes_match_the_plain_norms(probed):
    from tuneavideo.models.unet import FrameGroupNorm

    image, norm = _norm(probed)
    x = torch.randn(2 * 3, 4, 5, 5) * torch.tensor([0.5, 1.0, 2.0, 3.0])[:, None, None] + 1.5
    x[3:] *= 2.0  # the second video: another scale in every frame
    x[1] += 0.7  # one frame of the first video off in mean
    _, pooled = _norm(FrameGroupNorm)
    probed.modes = {5: "per-frame"}
    try:
        torch.testing.assert_close(norm(x), image(x), atol=1e-5, rtol=1e-5)
        probed.modes = {}
        torch.testing.assert_close(norm(x), pooled(x))
        probed.modes = {4: "per-frame"}  # another resolution: this one stays pooled
        torch.testing.assert_close(norm(x), pooled(x))
    finally:
        probed.modes = {}


def test_mixed_modes_take_the_centre_and_the_scale_from_where_they_say(probed):
    """Two frames of one group each, the second the first shifted by c: the video's mean is halfway, its variance
    var + c^2 / 4; each frame's own variance is var."""
    image, norm = _norm(probed, groups=1, channels=1, frames=2)
    with torch.no_grad():
        norm.weight.fill_(1.0)
        norm.bias.fill_(0.0)
    first = torch.tensor([[[[-1.0, 1.0], [-3.0, 3.0]]]])  # mean 0, var 5
    c = 4.0
    x = torch.cat([first, first + c])
    var, eps = 5.0, norm.eps
    expected = {
        "frame-mean": torch.cat([first, first]) / (var + c * c / 4 + eps) ** 0.5,
        "frame-scale": torch.cat([first - c / 2, first + c / 2]) / (var + eps) ** 0.5,
        "per-frame": torch.cat([first, first]) / (var + eps) ** 0.5,
        "pooled": torch.cat([first - c / 2, first + c / 2]) / (var + c * c / 4 + eps) ** 0.5,
    }
    try:
        for mode, value in expected.items():
            probed.modes = {2: mode}
            torch.testing.assert_close(norm(x), value, msg=mode)
    finally:
        probed.modes = {}


def test_the_pooled_setting_edits_as_the_benchmark_does(tmp_path):
    """``lost_objects.py``'s ``pooled`` setting is the benchmark's ``full`` variant: on the same clip, with the same
    (tiny) tuning and sampling, the same scores; the other settings are edited and their lost frames listed."""
    import json
    import subprocess

    steps = ["--full-steps", "1", "--sample-steps", "2"]
    bench_out, probe_out = tmp_path / "bench.json", tmp_path / "probe.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "toyworld_quality.py"), "--clips", "2", "--only", "2",
                           "--steps", "0", *steps, "--variants", "full", "--workers", "1", "--out", str(bench_out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([sys.executable, str(BENCHMARKS / "lost_objects.py"), "--clips", "2", "--only", "2", *steps,
                           "--settings", "pooled", "per-frame-at-16x16", "--workers", "1", "--out", str(probe_out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    full = json.loads(bench_out.read_text())["per_clip"][0]["full"]
    probe = json.loads(probe_out.read_text())["per_clip"][0]
    assert probe["clip"] == 2 and list(probe["settings"]) == ["pooled", "per-frame-at-16x16"]
    pooled = probe["settings"]["pooled"]
    for name in ("alignment", "detected", "motion_error_found"):
        assert pooled[name] == pytest.approx(full[name], abs=1e-9), name
    assert sum(map(len, pooled["lost"])) == round((1 - full["detected"]) * 24)
    for result in probe["settings"].values():
        assert len(result["lost"]) == 3 and all(0 <= f < 8 for frames in result["lost"] for f in frames)
        assert set(result["ratios"]) == {"16", "8", "4"}
        assert all(len(video) == 8 and all(0.2 < r < 5 for r in video) for video in result["ratios"]["16"])
    assert "| pooled |" in done.stdout and "frames lost (of 24)" in done.stdout


@pytest.mark.parametrize("options, named", [
    (["--clips", "2", "--only", "3"], "--only"),
    (["--only", "1", "--workers", "0"], "--workers"),
    (["--only", "1", "--sample-steps", "0"], "--sample-steps"),
    (["--only", "1", "--full-steps", "-1"], "tuning steps"),
    (["--only", "1", "--settings", "bogus"], "bogus"),
])
def test_bad_options_are_refused_in_one_line_before_any_work(tmp_path, options, named):
    import subprocess

    out = tmp_path / "probe.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "lost_objects.py"), *options, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert named in done.stderr and not out.exists()
