"""How the sampler carries a scale difference between frames: the loop gain of the frames' coupling, in the toy world.

The inflated UNet (untuned, as in ``frame_norm_stats.py``; the demo's inversion and sampling settings) inverts each
source clip; one frame of the inverted latents is then scaled by ``1 + eps`` (and by ``1 - eps``), and the clip's
three edits are sampled from the perturbed latents beside the unperturbed ones, with the method's pooled ResNet
GroupNorm statistics and with per-frame statistics. The gain is how much of the perturbation is left in the sampled
latents, in units of the one put in:

    gain = log(std of the frame's sampled latents, perturbed / unperturbed) / log(1 +- eps)

for the perturbed frame (``own``) and averaged over the other frames (``others``). An own gain of 1 passes the
difference through unchanged, above 1 the sampler amplifies it, and with pooled statistics a negative gain of the
others is the coupling: one frame growing scales the others down. The difference between the pooled and the
per-frame run is what the pooled statistics add; sparse-causal attention, which also couples the frames, acts in
both.

Usage: ``python benchmarks/coupling_gain.py --clips 4`` (about 2 minutes a clip on one CPU core; ``--seed 7`` the
validation clips, ``--model DIR`` another pipeline folder). Prints a markdown table; ``--out`` also writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from toyworld_quality import clip_setup, make_clips, pipeline_folder, tuned_model
from tuneavideo.demo import TOY_MODEL, DemoSettings
from tuneavideo.toyworld import clip_caption, with_attributes

#: The frame whose latents are perturbed: the middle of an 8-frame clip, neither sparse-causal attention's anchor
#: (frame 0) nor the last.
FRAME = 4


def frame_std(latents: torch.Tensor) -> torch.Tensor:
    """Each frame's standard deviation over its channels and pixels: ``(b, c, f, h, w)`` -> ``(b, f)``."""
    return latents.transpose(1, 2).flatten(2).std(dim=-1)


def gains(base: torch.Tensor, perturbed: torch.Tensor, frame: int, factor: float) -> dict:
    """The own and the others' gain of a perturbation by ``factor`` of ``frame``, per video of the batch, averaged."""
    logs = torch.log(frame_std(perturbed) / frame_std(base)) / math.log(factor)  # (b, f)
    others = [f for f in range(logs.shape[1]) if f != frame]
    return {"own": float(logs[:, frame].mean()), "others": float(logs[:, others].mean())}


def measure_clip(model: Path, clip, edits, settings: DemoSettings, eps: float) -> dict:
    _, frames, config = clip_setup(clip, settings)
    prompts = [clip_caption(with_attributes(clip, **change)) for change in edits]
    result = {}
    for norms in ("pooled", "per-frame"):
        tuned = tuned_model(model, config, frames, None)
        tuned.pipe.unet.pool_norm_over_frames = norms == "pooled"
        latents = tuned.invert(settings.steps, progress=False)  # (1, c, f, h, w)

        def sample(start: torch.Tensor) -> torch.Tensor:  # the three edits' latents, (3, c, f, h, w)
            return tuned.pipe(prompts, clip.num_frames, settings.size, settings.size, settings.steps,
                              settings.guidance_scale, "", 0.0, None, start, output_type="latent")

        base = sample(latents)
        result[norms] = {}
        for sign in (1, -1):
            factor = 1 + sign * eps
            scale = torch.ones(clip.num_frames)
            scale[FRAME] = factor
            result[norms][f"{factor:g}"] = gains(base, sample(latents * scale[:, None, None]), FRAME, factor)  # over (f, h, w)
    return result


def summarise(per_clip: list[dict]) -> dict:
    """Per statistics and side: the mean gain over the clips and both signs, and its smallest and largest."""
    summary = {}
    for norms in ("pooled", "per-frame"):
        summary[norms] = {}
        for side in ("own", "others"):
            values = [clip[norms][factor][side] for clip in per_clip for factor in clip[norms]]
            summary[norms][side] = {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(TOY_MODEL), help="pipeline folder (default the bundled toy model)")
    parser.add_argument("--clips", type=int, default=4, help="the first N clips of toyworld_quality.py's selection")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the clip selection (as toyworld_quality.py)")
    parser.add_argument("--eps", type=float, default=0.05, help="the perturbation: frame 4's latents times 1 +- eps")
    parser.add_argument("--out", help="also write the per-clip gains and the summary here (JSON)")
    args = parser.parse_args(argv)
    if args.clips < 1:
        print(f"error: --clips {args.clips}: pass at least 1", file=sys.stderr)
        return 2
    if not 0 < args.eps < 1:
        print(f"error: --eps {args.eps} is outside (0, 1); pass a small fraction such as 0.05", file=sys.stderr)
        return 2
    model = pipeline_folder(args.model)
    if model is None:
        return 2
    torch.set_num_threads(1)
    per_clip = []
    for index, (clip, edits) in enumerate(make_clips(args.clips, 8, args.seed)):
        per_clip.append(measure_clip(model, clip, edits, DemoSettings(), args.eps))
        print(f"clip {index + 1}/{args.clips} done", file=sys.stderr, flush=True)
    summary = summarise(per_clip)
    print("| statistics | gain of the perturbed frame: mean (min - max) | gain of the other frames |")
    print("|---|---|---|")
    for norms, row in summary.items():
        cells = " | ".join(f"{row[side]['mean']:+.2f} ({row[side]['min']:+.2f} - {row[side]['max']:+.2f})"
                           for side in ("own", "others"))
        print(f"| {norms} | {cells} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": vars(args), "summary": summary, "per_clip": per_clip},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
