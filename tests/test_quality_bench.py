"""``benchmarks/toyworld_quality.py`` on one clip with tiny step counts: every variant of the table is
measured through the project's tuning, inversion and sampling code, with finite, in-range metrics."""

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "toyworld_quality.py"
VARIANTS = ("full", "no-tuning", "no-inversion", "per-frame-attn", "image-model", "steps-0", "steps-2")


def test_quality_benchmark_runs_every_variant(tmp_path):
    out = tmp_path / "quality.json"
    command = [sys.executable, str(BENCH), "--clips", "1", "--steps", "0", "2", "--full-steps", "2",
               "--sample-steps", "3", "--workers", "1", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert not out.with_suffix(".partial.json").exists()
    assert list(report["summary"]) == list(VARIANTS)
    for variant, metrics in report["summary"].items():
        for name in ("alignment", "preservation", "consistency", "detected"):
            assert 0.0 <= metrics[name] <= 1.0, (variant, name, metrics[name])
        assert math.isfinite(metrics["motion_error"]) and metrics["motion_error"] >= 0, variant
        assert math.isfinite(metrics["psnr"]), variant
    # inversion reconstructs the source far better than random noise does
    assert report["summary"]["full"]["psnr"] > report["summary"]["no-inversion"]["psnr"] + 3
    assert "| full |" in done.stdout
