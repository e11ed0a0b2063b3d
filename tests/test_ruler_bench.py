"""The scripts that measure what the toy model can serve as a ruler for, on one validation clip: ``colour_edits.py``
(how far a recolouring moves the object) and ``blend_masks.py`` (whether cross-attention marks the object)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=600,
                          cwd=BENCHMARKS)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_colour_edits_measures_every_recolouring(tmp_path):
    """Each other colour once; the latent and RGB cosines in [-1, 1], the RGB one as computed by hand from the palette
    and the background's mean colour; the source's own colour at latent distance 0 from itself."""
    from tuneavideo.toyworld import COLOURS
    from tuneavideo.toyworld.render import render_background

    out = tmp_path / "colour.json"
    printed = run("colour_edits.py", "--clips", "1", "--seed", "7", "--variants", "image-model", "--out", str(out))
    rows = json.loads(out.read_text())["edits"]
    source = rows[0]["source"]
    assert sorted(r["target"] for r in rows) == sorted(c for c in COLOURS if c != source)
    background = render_background(rows[0]["caption"].split(" on ")[-1], 64).reshape(-1, 3).mean(0)
    for row in rows:
        a, b = np.subtract(COLOURS[row["source"]], background), np.subtract(COLOURS[row["target"]], background)
        assert abs(row["rgb_cosine"] - a @ b / np.linalg.norm(a) / np.linalg.norm(b)) < 1e-9
        assert -1 <= row["latent_cosine"] <= 1 and row["latent_distance"] > 0
        assert 0 <= row["image-model"]["alignment"] <= 1 and row["image-model"]["motion_error"] >= 0
    assert "| image-model |" in printed


def test_blend_masks_table_covers_every_rule():
    """18 rules (3 layer sets x 3 thresholds x max-pool or not), IoU and coverage in [0, 1]; the max-pool only grows a
    mask, and a higher threshold only shrinks it."""
    printed = run("blend_masks.py", "--clips", "1")
    rows = {(m[0], float(m[1]), m[2]): (float(m[3]), float(m[4]))
            for m in re.findall(r"^\| (\w+) \| ([\d.]+) \| (yes|no) \| ([\d.]+) \| ([\d.]+) \|$", printed, re.M)}
    assert len(rows) == 18
    assert all(0 <= iou <= 1 and 0 <= cover <= 1 for iou, cover in rows.values())
    for layers in ("all", "down", "up"):
        for threshold in (0.3, 0.5, 0.7):
            assert rows[(layers, threshold, "yes")][1] >= rows[(layers, threshold, "no")][1]
        for pool in ("yes", "no"):
            covers = [rows[(layers, t, pool)][1] for t in (0.3, 0.5, 0.7)]
            assert covers == sorted(covers, reverse=True)
