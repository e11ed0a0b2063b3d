"""``benchmarks/long_video.py`` at a tiny size: every variant and figure of its tables, through the project's tuning,
``load_run`` of other frames, windows and scoring (its --memory mode is not run here: two fresh processes per frame
count take half a minute)."""

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "long_video.py"


def run(*args):
    done = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_quality_tables(tmp_path):
    out = tmp_path / "long.json"
    stdout = run("--clips", "1", "--frames", "8", "--tuned-frames", "4", "--overlap", "1", "--train-steps", "1",
                 "--sample-steps", "2", "--out", str(out))
    report = json.loads(out.read_text())
    assert list(report["summary"]) == ["windows", "segments", "whole"]
    for variant, summary in report["summary"].items():
        assert len(summary["segments"]) == 2, variant
        for row in summary["segments"]:
            assert 0 <= row["alignment"] <= 1 and 0 <= row["consistency"] <= 1 and math.isfinite(row["psnr"]), variant
        assert 0 <= summary["boundary_changes"] <= 3 and 0 <= summary["video_consistency"] <= 1, variant
    clip = report["per_clip"][0]["variants"]["windows"]
    assert len(clip["boundary_changes"]) == 3 * 1 and len(clip["inside_changes"]) == 3 * 6  # 3 edits; 1 boundary, 6 pairs
    assert "| windows | 4-7 |" in stdout and "| segments |" in stdout

