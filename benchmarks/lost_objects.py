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

Usage: ``python benchmarks/lost_objects.py --clips 48 --only 5 7 15 17 42 45 48`` (about 3 minutes a clip on one CPU
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

from toyworld_quality import (_worker_init, build_parser, clip_run, make_clips, pipeline_folder, score, settings_problem,
                              trained_state, tuned_model)
from tuneavideo.demo import TOY_MODEL
from tuneavideo.models.unet import FrameGroupNorm
from tuneavideo.toyworld import clip_caption, detect_video, with_attributes
from tuneavideo.toyworld.metrics import to_uint8_frames
from tuneavideo.tuning import tune

#: How a pooled norm computes its statistics: (centre, scale), each from the frame or the video.
NORM_MODES = {"pooled": ("video", "video"), "per-frame": ("frame", "frame"),
              "frame-mean": ("frame", "video"), "frame-scale": ("video", "frame")}


class ProbedNorm(FrameGroupNorm):
    """A pooled GroupNorm whose statistics :data:`NORM_MODES` chooses per latent resolution (``modes``: height ->
    mode, ``pooled`` where absent)."""

    modes: dict = {}
    #: While a dict: for each latent resolution, every call's sigma_f / sigma_pool of the input, averaged over the
    #: groups, per video and frame (``(videos, f)``).
    ratios: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.num_frames
        mode = self.modes.get(x.shape[-2], "pooled")
        if self.ratios is not None and frames > 1:
            grouped = x.detach().reshape(x.shape[0] // frames, frames, self.num_groups, -1).double()
            own = grouped.std(-1)  # (videos, f, G)
            pooled = grouped.transpose(1, 2).reshape(grouped.shape[0], self.num_groups, -1).std(-1)[:, None]
            self.ratios.setdefault(x.shape[-2], []).append((own / pooled).mean(-1).numpy())
        if frames == 1 or mode == "pooled":
            return super().forward(x)
        centre, scale = NORM_MODES[mode]
        batch_frames, channels, height, width = x.shape
        groups = x.reshape(batch_frames // frames, frames, self.num_groups, -1).double()  # (b, f, G, c/G*h*w)
        frame_mean = groups.mean(-1, keepdim=True)
        video_mean = groups.mean((1, 3), keepdim=True)
        mean = frame_mean if centre == "frame" else video_mean
        if scale == "frame":
            var = groups.var(-1, unbiased=False, keepdim=True)
        else:
            var = (groups - video_mean).pow(2).mean((1, 3), keepdim=True)
        out = ((groups - mean) / torch.sqrt(var + self.eps)).to(x.dtype).reshape(batch_frames, channels, height, width)
        return out * self.weight[:, None, None] + self.bias[:, None, None]


#: The sampling steps (from 1) whose ratios the step table prints and the JSON keeps.
STEP_MARKS = (1, 5, 10, 15, 20, 25)


def keep_marked_steps(per_clip: list[dict]) -> None:
    """Each setting's ratios step by step, cut to the steps of :data:`STEP_MARKS` that the sampling had, in place."""
    for clip in per_clip:
        for result in clip["settings"].values():
            for size, steps in result["ratios_by_step"].items():
                result["ratios_by_step"][size] = [steps[m - 1] for m in STEP_MARKS if m <= len(steps)]


def latent_levels(model: str, size: int) -> list[int]:
    """The latent resolutions of ``model``'s UNet levels for frames of ``size`` pixels, largest first."""
    config = lambda part: json.loads((Path(model) / part / "config.json").read_text())  # noqa: E731
    latent = size // 2 ** (len(config("vae")["block_out_channels"]) - 1)
    return [latent >> level for level in range(len(config("unet")["block_out_channels"]))]


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
    ProbedNorm.modes, ProbedNorm.ratios = edit_modes, {}
    unet.set_frame_attention(edit_attn)
    prompts = [clip_caption(with_attributes(clip, **change), template) for change in edits] + [clip_caption(clip, template)]
    videos = tuned.pipe(prompts, vc.num_frames, vc.height, vc.width, sample.num_inference_steps, sample.guidance_scale,
                        sample.negative_prompt, sample.eta, None, latents)
    # the conditional branch's videos (the second half of each guided batch): each edit's ratios over its steps and the
    # level's norms, and step by step (one UNet call a step)
    steps = sample.num_inference_steps
    by_step = {size: np.stack(calls).reshape(steps, len(calls) // steps, -1, vc.num_frames).mean(1)[:, len(prompts):]
               for size, calls in ProbedNorm.ratios.items()}
    ProbedNorm.modes, ProbedNorm.ratios = {}, None
    found = [[d.found for d in detect_video(to_uint8_frames(video))] for video in videos[: len(edits)]]
    return {**score(clip, edits, source, videos), "found": found,
            "ratios": {size: ratios.mean(0).round(4).tolist() for size, ratios in by_step.items()},
            "ratios_by_step": {size: ratios.round(4).tolist() for size, ratios in by_step.items()}}


def probe_clip(number: int, clip, edits, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        source, frames, config = clip_run(number - 1, clip, args, Path(tmp))
        config.tune.steps = args.full_steps
        run_dir = Path(tmp) / "run"
        if config.tune.steps:
            tune(str(args.model), config, run_dir, progress=False, log=lambda *_: None)
        tuned = tuned_model(Path(args.model), config, frames, trained_state(run_dir) if config.tune.steps else None)
    unet = tuned.pipe.unet
    norms = [m for m in unet.modules() if isinstance(m, FrameGroupNorm)]
    for norm in norms:
        norm.__class__ = ProbedNorm
    results = {}
    for name, modes in settings_for(latent_levels(args.model, args.size)).items():
        if args.settings and name not in args.settings:
            continue
        scored = edit_with(tuned, clip, edits, source, args.caption_template, *modes)
        lost = [[f for f, found in enumerate(video) if not found] for video in scored["found"]]
        results[name] = {"alignment": scored["alignment"], "motion_error_found": scored["motion_error_found"],
                         "detected": scored["detected"], "lost": lost, "ratios": scored["ratios"],
                         "ratios_by_step": scored["ratios_by_step"]}
    return {"clip": number, "caption": clip_caption(clip), "edits": [dict(e) for e in edits], "settings": results}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=48, help="size of toyworld_quality.py's clip selection (default 48)")
    parser.add_argument("--only", type=int, nargs="+", metavar="N", required=True, help="the clips to edit again, numbered from 1")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the clip selection (default the benchmark's)")
    parser.add_argument("--model", default=str(TOY_MODEL), help="the pipeline folder (default the bundled toy model)")
    parser.add_argument("--workers", type=int, default=2, help="clips in parallel, one CPU thread each (default 2)")
    parser.add_argument("--settings", nargs="+", metavar="NAME", help="only these settings (default all)")
    parser.add_argument("--full-steps", type=int, help="tuning steps (default the benchmark's)")
    parser.add_argument("--sample-steps", type=int, help="DDIM inversion and sampling steps (default the benchmark's)")
    parser.add_argument("--out", help="also write the per-clip results here (JSON)")
    args = parser.parse_args(argv)
    if pipeline_folder(args.model) is None:
        return 2
    # the benchmark's own settings for each clip (its defaults: frames, size, tuning and sampling)
    steps = [f"--{name.replace('_', '-')}={value}" for name in ("full_steps", "sample_steps")
             if (value := getattr(args, name)) is not None]
    bench = build_parser().parse_args(["--clips", str(args.clips), "--seed", str(args.seed), "--model", args.model,
                                       "--workers", str(args.workers), "--only", *map(str, args.only), *steps])
    if problem := settings_problem(bench):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    bench.model, bench.settings = str(Path(args.model).resolve()), args.settings
    numbers = sorted(set(args.only))
    known = settings_for(latent_levels(bench.model, bench.size))
    if args.settings and not set(args.settings) <= set(known):
        print(f"error: unknown --settings {sorted(set(args.settings) - set(known))}; choose from {' '.join(known)}",
              file=sys.stderr)
        return 2
    clips = make_clips(bench.clips, bench.frames, bench.seed)
    began = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                             initargs=(os.getpid(),)) as pool:
        per_clip = list(pool.map(probe_clip, numbers, *zip(*(clips[n - 1] for n in numbers)), [bench] * len(numbers)))
    names = list(per_clip[0]["settings"])
    levels = latent_levels(bench.model, bench.size)
    print(f"{len(per_clip)} clips, {time.perf_counter() - began:.0f} s\n")
    edited = sum(len(c["edits"]) for c in per_clip) * bench.frames
    print(f"| setting | frames lost (of {edited}) | alignment | motion error, frames with an object (px) |")
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
    print("\nsigma_f / sigma_pool of each edited frame's norm inputs (conditional branch, over the steps and the level's "
          "norms): the lost frames against the rest, and how many lost frames have their video's lowest ratio")
    print("| setting | resolution | lost frames: mean (min - max) | other frames: mean (min - max) | lowest in their video |")
    print("|---|---|---|---|---|")
    for name in names:
        for size in per_clip[0]["settings"][name]["ratios"]:
            lost, kept, lowest = [], [], 0
            for c in per_clip:
                result = c["settings"][name]
                for video, frames in zip(result["ratios"][size], result["lost"]):
                    lost += [video[f] for f in frames]
                    kept += [r for f, r in enumerate(video) if f not in frames]
                    lowest += sum(video[f] == min(video) for f in frames)
            if lost:
                print(f"| {name} | {size}x{size} | {np.mean(lost):.3f} ({min(lost):.3f} - {max(lost):.3f}) | "
                      f"{np.mean(kept):.3f} ({min(kept):.3f} - {max(kept):.3f}) | {lowest} of {len(lost)} |")
    keep_marked_steps(per_clip)
    if "pooled" in names:
        print("\nthe same ratio step by step, averaged over the frames the method (pooled) loses, under each setting")
        marks = [m for m in STEP_MARKS if m <= bench.sample_steps]
        print("| setting | resolution | " + " | ".join(f"step {m}" for m in marks) + " |")
        print("|---|---|" + "---|" * len(marks))
        for name in names:
            for size in levels:
                rows = [video_steps[:, e, f] for c in per_clip
                        for video_steps in [np.asarray(c["settings"][name]["ratios_by_step"][size])]
                        for e, frames in enumerate(c["settings"]["pooled"]["lost"]) for f in frames]
                if rows:
                    mean = np.mean(rows, axis=0)
                    print(f"| {name} | {size}x{size} | " + " | ".join(f"{value:.3f}" for value in mean) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": vars(args), "per_clip": per_clip}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
