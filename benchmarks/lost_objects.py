"""Where the method loses the object: clips edited again with the pooled GroupNorm statistics changed one way at a time.

In ``toyworld_quality.py`` the method now and then draws a frame without any object, and its ablations with per-frame
attention or per-frame norms do not. This takes clips of that benchmark's selection (by number, as its progress lines
and ``--grids`` name them), tunes the method on each exactly as it does, and edits each clip (its three edits and the
source prompt, one batch from the inverted latents) with the same tuned weights under each of these settings:

- ``pooled``: the method (as ``full``);
- ``per-frame``: every pooled norm per frame, in the inversion and the edit;
- ``frame-mean``: each frame centred on its own group mean and scaled by the video's standard deviation;
- ``frame-scale``: centred on the video's group mean and scaled by the frame's own standard deviation;
- ``per-frame-at-RxR``: per-frame norms at that latent resolution only (``conv_norm_out`` is at the largest);
- ``per-frame-inversion``, ``per-frame-edit``: per-frame norms in one of the two stages only;
- ``per-frame-attn``, ``per-frame-attn-edit``: pooled norms with per-frame self-attention (each frame attends to
  itself only) in both stages, or in the edit only.

A frame is lost when the detector finds no object in it. Prints, per setting, the frames lost, the alignment, and the
motion error on the frames where the source's and the edit's object are both found; then each lost frame.

Usage: ``python benchmarks/lost_objects.py --clips 48 --only 5 7 15 17 42 45 48`` (about 2 minutes a clip on one CPU
core; ``--workers`` clips in parallel; ``--out JSON``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from toyworld_quality import _worker_init, build_parser, clip_run, make_clips, pipeline_folder, score, trained_state, tuned_model
from tuneavideo.demo import TOY_MODEL
from tuneavideo.models.unet import FrameGroupNorm
from tuneavideo.toyworld import clip_caption, with_attributes
from tuneavideo.tuning import tune

#: How a pooled norm computes its statistics: (centre, scale), each from the frame or the video.
NORM_MODES = {"pooled": ("video", "video"), "per-frame": ("frame", "frame"),
              "frame-mean": ("frame", "video"), "frame-scale": ("video", "frame")}


class ProbedNorm(FrameGroupNorm):
    """A pooled GroupNorm whose statistics :data:`NORM_MODES` chooses per latent resolution (``modes``: height ->
    mode, ``pooled`` where absent)."""

    modes: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.num_frames
        mode = self.modes.get(x.shape[-2], "pooled")
        if frames == 1 or mode == "pooled":
            return super().forward(x)
        centre, scale = NORM_MODES[mode]
        batch_frames, channels, height, width = x.shape
        groups = x.view(batch_frames // frames, frames, self.num_groups, -1).double()  # (b, f, G, c/G*h*w)
        frame_mean = groups.mean(-1, keepdim=True)
        video_mean = groups.mean((1, 3), keepdim=True)
        mean = frame_mean if centre == "frame" else video_mean
        if scale == "frame":
            var = groups.var(-1, unbiased=False, keepdim=True)
        else:
            var = (groups - video_mean).pow(2).mean((1, 3), keepdim=True)
        out = ((groups - mean) / torch.sqrt(var + self.eps)).to(x.dtype).view(batch_frames, channels, height, width)
        return out * self.weight[:, None, None] + self.bias[:, None, None]


def settings_for(levels: list[int]) -> dict[str, tuple[dict, dict, str, str]]:
    """Each setting: the norm modes (height -> mode) in the inversion and in the edit, and the self-attention in each."""
    every = lambda mode: {size: mode for size in levels}  # noqa: E731
    table = {"pooled": ({}, {}, "sparse-causal", "sparse-causal")}
    for mode in ("per-frame", "frame-mean", "frame-scale"):
        table[mode] = (every(mode), every(mode), "sparse-causal", "sparse-causal")
    for size in levels:
        table[f"per-frame-at-{size}x{size}"] = ({size: "per-frame"}, {size: "per-frame"}, "sparse-causal", "sparse-causal")
    table["per-frame-inversion"] = (every("per-frame"), {}, "sparse-causal", "sparse-causal")
    table["per-frame-edit"] = ({}, every("per-frame"), "sparse-causal", "sparse-causal")
    table["per-frame-attn"] = ({}, {}, "per-frame", "per-frame")
    table["per-frame-attn-edit"] = ({}, {}, "sparse-causal", "per-frame")
    return table


def edit_with(tuned, clip, edits, source, template, inversion_modes, edit_modes, inversion_attn, edit_attn) -> dict:
    """The three edits and the source prompt from the inverted latents, as ``toyworld_quality.evaluate`` makes them,
    with the norms' modes and the self-attention set for each stage."""
    sample, vc, unet = tuned.config.sample, tuned.config.video, tuned.pipe.unet
    ProbedNorm.modes = inversion_modes
    unet.set_frame_attention(inversion_attn)
    latents = tuned.invert(sample.num_inversion_steps, progress=False)
    ProbedNorm.modes = edit_modes
    unet.set_frame_attention(edit_attn)
    prompts = [clip_caption(with_attributes(clip, **change), template) for change in edits] + [clip_caption(clip, template)]
    videos = tuned.pipe(prompts, vc.num_frames, vc.height, vc.width, sample.num_inference_steps, sample.guidance_scale,
                        sample.negative_prompt, sample.eta, None, latents)
    ProbedNorm.modes = {}
    return score(clip, edits, source, videos)


def probe_clip(number: int, clip, edits, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        source, frames, config = clip_run(number - 1, clip, args, Path(tmp))
        config.tune.steps = args.full_steps
        run_dir = Path(tmp) / "run"
        tune(str(args.model), config, run_dir, progress=False, log=lambda *_: None)
        tuned = tuned_model(Path(args.model), config, frames, trained_state(run_dir))
    unet = tuned.pipe.unet
    norms = [m for m in unet.modules() if isinstance(m, FrameGroupNorm)]
    for norm in norms:
        norm.__class__ = ProbedNorm
    latent = config.video.height // tuned.pipe.latent_scale
    levels = [latent >> k for k in range(len(unet.config.block_out_channels))]
    results = {}
    for name, modes in settings_for(levels).items():
        scored = edit_with(tuned, clip, edits, source, args.caption_template, *modes)
        lost = [[f for f, value in enumerate(video) if value is None] for video in scored["fidelity"]]
        results[name] = {"alignment": scored["alignment"], "motion_error_found": scored["motion_error_found"],
                         "detected": scored["detected"], "lost": lost}
    return {"clip": number, "caption": clip_caption(clip), "edits": [dict(e) for e in edits], "settings": results}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=48, help="size of toyworld_quality.py's clip selection (default 48)")
    parser.add_argument("--only", type=int, nargs="+", metavar="N", required=True, help="the clips to edit again, numbered from 1")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the clip selection (default the benchmark's)")
    parser.add_argument("--model", default=str(TOY_MODEL), help="the pipeline folder (default the bundled toy model)")
    parser.add_argument("--workers", type=int, default=2, help="clips in parallel, one CPU thread each (default 2)")
    parser.add_argument("--out", help="also write the per-clip results here (JSON)")
    args = parser.parse_args(argv)
    if pipeline_folder(args.model) is None:
        return 2
    if not all(1 <= n <= args.clips for n in args.only):
        print(f"error: --only takes clip numbers from 1 to --clips ({args.clips}), not {args.only}", file=sys.stderr)
        return 2
    # the benchmark's own settings for each clip (its defaults: frames, size, tuning and sampling)
    bench = build_parser().parse_args(["--clips", str(args.clips), "--seed", str(args.seed), "--model", args.model])
    bench.model = str(Path(args.model).resolve())
    clips = make_clips(bench.clips, bench.frames, bench.seed)
    began = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                             initargs=(os.getpid(),)) as pool:
        per_clip = list(pool.map(probe_clip, args.only, *zip(*(clips[n - 1] for n in args.only)),
                                 [bench] * len(args.only)))
    names = list(per_clip[0]["settings"])
    print(f"{len(per_clip)} clips, {time.perf_counter() - began:.0f} s\n")
    print("| setting | frames lost (of {}) | alignment | motion error, frames with an object (px) |".format(
        24 * len(per_clip)))
    print("|---|---|---|---|")
    for name in names:
        rows = [c["settings"][name] for c in per_clip]
        lost = sum(len(frames) for r in rows for frames in r["lost"])
        print(f"| {name} | {lost} | {np.mean([r['alignment'] for r in rows]):.3f} | "
              f"{np.nanmean([r['motion_error_found'] for r in rows]):.2f} |")
    print("\nlost frames (clip, edit, frames) by setting:")
    for name in names:
        where = [f"{c['clip']}/{e} {frames}" for c in per_clip for e, frames in enumerate(c["settings"][name]["lost"]) if frames]
        print(f"- {name}: {'; '.join(where) or 'none'}")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": vars(args), "per_clip": per_clip}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
