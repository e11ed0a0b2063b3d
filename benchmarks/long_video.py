"""Videos longer than the tuned clip, in the toy world: frame windows against independent segments and the whole
video at once; and the memory and time of a sampling step against the number of frames.

Quality (the default): for each source clip (seeded, 64 frames at 64x64, none of its captions or edits a held-out
combination) the bundled toy model is tuned on the first 16 frames (the demo's settings: 150 steps at lr 1e-4), and
all 64 frames are inverted (DDIM, 25 steps) and edited three ways (object colour, object shape, background; guidance
7.5, 25 steps), with the source prompt sampled beside them, as ``tuneavideo edit RUN --num-frames 64`` does it,
in three variants:

- ``windows``: windows of the tuned length (16 frames) sharing 4 (:mod:`tuneavideo.windows`), the default;
- ``segments``: each 16-frame segment inverted and edited on its own (``edit RUN --num-frames 16 --start S``), the
  workaround of splitting a long video into clips;
- ``whole``: all 64 frames at once (``--window 64``): temporal attention and the pooled norms over 64 frames.

Per 16-frame segment, means over the edits: alignment, consistency (within the segment) and motion error, as
``tuneavideo.toyworld.metrics.score_edit`` defines them; PSNR of the source prompt's video. At the segment boundaries
(frames 15|16, 31|32, 47|48), against the pairs of neighbouring frames inside segments: how many of the object's
detected attributes (shape, colour, background; a lost object counts as changed) change from one frame to the next,
and the jump of the object's position beyond the source's own motion (px). Whole-video consistency: the share of the
64 frames that agree with the video's majority attributes.

Memory (``--memory``): for N = 16, 32, 64, 128 frames, windowed (16 sharing 4) and whole, each in a fresh process:
the toy model (inflated, untuned) samples N frames with guidance after one warm-up step; peak RSS (and the peak with
the models loaded, before sampling), and seconds per sampling step (median).

    python benchmarks/long_video.py --out benchmarks/long_video.json               # quality, about 20 minutes on one core
    python benchmarks/long_video.py --memory --out benchmarks/long_video_memory.json   # memory and time, a few minutes
    python benchmarks/long_video.py --quick --out /tmp/long.json                   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tuneavideo.config import RunConfig
from tuneavideo.demo import TOY_MODEL, DemoSettings
from tuneavideo.editing import TunedModel, load_run
from tuneavideo.loading import load_base
from toyworld_quality import make_clips  # the same clip selection as the quality benchmark
from tuneavideo.toyworld import clip_caption, detect_video, render_clip, with_attributes
from tuneavideo.toyworld.metrics import psnr, score_edit, to_uint8_frames
from tuneavideo.tuning import tune
from tuneavideo.windows import FrameWindows

VARIANTS = ("windows", "segments", "whole")
SEGMENT_METRICS = ("alignment", "consistency", "motion_error", "detected")
ATTRIBUTES = ("shape", "colour", "background")


# -------------------------------------------------------------------------------------------------- quality


def edit_variant(tuned: TunedModel, prompts: list[str], variant: str, args, base, run_dir: Path) -> torch.Tensor:
    """The videos ``(prompts, f, 3, h, w)`` of one variant: every prompt from the same inverted latents."""
    vc, sample = tuned.config.video, tuned.config.sample
    if variant == "segments":
        parts = []
        for start in range(0, args.frames, args.tuned_frames):
            segment = load_run(run_dir, base_model=base, num_frames=args.tuned_frames, start=start)
            parts.append(edit_variant(segment, prompts, "whole", args, base, run_dir))
        return torch.cat(parts, dim=1)
    sample = replace(sample, window=args.window if variant == "windows" else vc.num_frames, overlap=args.overlap)
    latents = tuned.invert(progress=False, sample=sample)
    return tuned.pipe(prompts, vc.num_frames, vc.height, vc.width, sample.num_inference_steps, sample.guidance_scale,
                      sample.negative_prompt, sample.eta, None, latents, windows=tuned.windows(sample))


def attribute_changes(detections) -> np.ndarray:
    """Per pair of neighbouring frames, how many of the object's attributes change (a lost object: all of them)."""
    values = [tuple(getattr(d, a) for a in ATTRIBUTES) if d.found else (None,) * len(ATTRIBUTES) for d in detections]
    return np.array([sum(x != y for x, y in zip(a, b)) for a, b in zip(values, values[1:])], dtype=float)


def position_jumps(source_found, edit_found) -> np.ndarray:
    """Per pair of neighbouring frames, how far the edit's object moves beyond the source's own motion (px); NaN where
    either video shows no object in either frame."""
    jumps = []
    for f in range(1, len(source_found)):
        s0, s1, e0, e1 = source_found[f - 1].centroid, source_found[f].centroid, edit_found[f - 1].centroid, edit_found[f].centroid
        if None in (s0, s1, e0, e1):
            jumps.append(float("nan"))
            continue
        jumps.append(float(np.hypot((e1[0] - e0[0]) - (s1[0] - s0[0]), (e1[1] - e0[1]) - (s1[1] - s0[1]))))
    return np.array(jumps)


def score_variant(source: np.ndarray, videos: torch.Tensor, clip, edits, segment: int) -> dict:
    attributes = {"shape": clip.shape, "colour": clip.colour, "background": clip.background}
    frames = len(source)
    boundaries = [b - 1 for b in range(segment, frames, segment)]  # index of the pair (b - 1, b)
    inside = [p for p in range(frames - 1) if p not in boundaries]
    source_found = detect_video(source)
    result = {"segments": [], "boundary_changes": [], "inside_changes": [], "boundary_jump": [], "inside_jump": [],
              "video_consistency": []}
    for k in range(0, frames, segment):
        part = slice(k, k + segment)
        scores = [score_edit(source[part], video[part], change, attributes).as_dict() for change, video in zip(edits, videos)]
        row = {m: float(np.nanmean([s[m] for s in scores])) for m in SEGMENT_METRICS}
        row["psnr"] = psnr(source[part], to_uint8_frames(videos[-1][part]))
        result["segments"].append(row)
    for change, video in zip(edits, videos):
        found = detect_video(to_uint8_frames(video))
        changes, jumps = attribute_changes(found), position_jumps(source_found, found)
        result["boundary_changes"] += changes[boundaries].tolist()
        result["inside_changes"] += changes[inside].tolist()
        result["boundary_jump"] += jumps[boundaries].tolist()
        result["inside_jump"] += jumps[inside].tolist()
        result["video_consistency"].append(score_edit(source, video, change, attributes).consistency)
    return result


def run_clip(index: int, clip, edits, args, base, work: Path) -> dict:
    source = render_clip(clip, size=args.size)  # (f, h, w, 3) uint8
    frames_dir = work / f"clip-{index}"
    frames_dir.mkdir()
    for i, frame in enumerate(source):
        Image.fromarray(frame).save(frames_dir / f"{i:03d}.png")
    config = RunConfig()
    config.video.path, config.video.prompt = str(frames_dir), clip_caption(clip)
    config.video.num_frames, config.video.width, config.video.height = args.tuned_frames, args.size, args.size
    config.tune.base_model, config.tune.steps, config.tune.learning_rate = str(args.model), args.train_steps, args.learning_rate
    config.tune.gradient_checkpointing, config.tune.checkpoint_every = False, 0
    config.sample.num_inference_steps = config.sample.num_inversion_steps = args.sample_steps
    config.sample.guidance_scale = args.guidance
    run_dir = work / f"run-{index}"
    began = time.perf_counter()
    tune(base, config, run_dir, progress=False, log=lambda *_: None)
    result = {"caption": clip_caption(clip), "edits": list(edits), "tune_s": round(time.perf_counter() - began, 1), "variants": {}}
    tuned = load_run(run_dir, base_model=base, num_frames=args.frames)
    prompts = [clip_caption(with_attributes(clip, **change)) for change in edits] + [clip_caption(clip)]
    for variant in args.variants:
        began = time.perf_counter()
        videos = edit_variant(tuned, prompts, variant, args, base, run_dir)
        seconds = time.perf_counter() - began
        scored = score_variant(source, videos, clip, edits, args.tuned_frames)
        result["variants"][variant] = {**scored, "seconds": round(seconds, 1)}
        print(f"  {variant}: {seconds:.0f} s", flush=True)
    return result


def summarise(per_clip: list[dict], variants: list[str]) -> dict:
    summary = {}
    for variant in variants:
        runs = [clip["variants"][variant] for clip in per_clip]
        segments = len(runs[0]["segments"])
        summary[variant] = {
            "segments": [{m: float(np.nanmean([r["segments"][k][m] for r in runs])) for m in (*SEGMENT_METRICS, "psnr")}
                         for k in range(segments)],
            **{name: float(np.nanmean([x for r in runs for x in r[name]]))
               for name in ("boundary_changes", "inside_changes", "boundary_jump", "inside_jump", "video_consistency")},
            "seconds": float(np.mean([r["seconds"] for r in runs])),
        }
    return summary


def tables(summary: dict, segment: int) -> str:
    lines = ["| variant | frames | alignment | consistency | motion error (px) | detected | PSNR, source prompt (dB) |",
             "|---|---|---|---|---|---|---|"]
    for variant, s in summary.items():
        for k, row in enumerate(s["segments"]):
            lines.append(f"| {variant} | {k * segment}-{(k + 1) * segment - 1} | {row['alignment']:.3f} | {row['consistency']:.3f} | "
                         f"{row['motion_error']:.2f} | {row['detected']:.3f} | {row['psnr']:.2f} |")
    lines += ["", "| variant | attributes changed at a boundary | the same inside segments | position jump at a boundary (px) "
                  "| the same inside segments (px) | whole-video consistency | seconds (invert + edit 4 prompts) |",
              "|---|---|---|---|---|---|---|"]
    for variant, s in summary.items():
        lines.append(f"| {variant} | {s['boundary_changes']:.3f} | {s['inside_changes']:.3f} | {s['boundary_jump']:.2f} | "
                     f"{s['inside_jump']:.2f} | {s['video_consistency']:.3f} | {s['seconds']:.0f} |")
    return "\n".join(lines)


def quality(args) -> int:
    began = time.perf_counter()
    base = load_base(args.model)
    clips = make_clips(args.clips, args.frames, args.seed)
    per_clip = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (clip, edits) in enumerate(clips):
            print(f"[{time.perf_counter() - began:6.0f} s] clip {index + 1}/{len(clips)}: {clip_caption(clip)}", flush=True)
            per_clip.append(run_clip(index, clip, edits, args, base, Path(tmp)))
    summary = summarise(per_clip, args.variants)
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "seconds": round(time.perf_counter() - began, 1), "summary": summary, "per_clip": per_clip}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(tables(summary, args.tuned_frames))
    print(f"\n{report['seconds']:.0f} s in all; wrote {args.out}")
    return 0


# --------------------------------------------------------------------------------------------------- memory


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def memory_child(frames: int, window: int, overlap: int, steps: int, model: str, size: int) -> dict:
    """In a fresh process: sample ``frames`` frames of the untuned inflated toy model (guidance, one prompt)."""
    from tuneavideo.tuning import build_pipeline, build_video_unet

    base = load_base(model)
    pipe = build_pipeline(base, build_video_unet(base, seed=0), log=lambda *_: None)
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        module.eval().requires_grad_(False)
    windows = FrameWindows.resolve(window, overlap, window, frames)
    latents = torch.randn(1, 4, frames, size // pipe.latent_scale, size // pipe.latent_scale, generator=torch.Generator().manual_seed(0))
    before = peak_rss_mib()  # the models loaded
    pipe("a red circle moving right on blue sky", frames, size, size, 1, 7.5, latents=latents, output_type="latent",
         windows=windows)  # a warm-up step: allocator and kernels ready, as in a real edit's later steps
    stamps = [time.perf_counter()]
    pipe("a red circle moving right on blue sky", frames, size, size, steps, 7.5, latents=latents, output_type="latent",
         windows=windows, callback=lambda i, n: stamps.append(time.perf_counter()))
    step_s = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"frames": frames, "variant": "windows" if window < frames else "whole",
            "windows": [windows.size, windows.overlap] if windows else None, "peak_rss_mib": round(peak_rss_mib(), 1),
            "rss_models_loaded_mib": round(before, 1), "median_step_s": round(statistics.median(step_s), 4), "step_s": step_s}


def memory(args) -> int:
    rows = []
    for frames in args.memory_frames:
        for windowed in (True, False):
            window = args.window if windowed else frames
            command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(frames), "--window", str(window),
                       "--overlap", str(args.overlap), "--memory-steps", str(args.memory_steps), "--model", str(args.model),
                       "--size", str(args.size)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"N={frames} {'windows' if windowed else 'whole'}: peak RSS {row['peak_rss_mib']:.0f} MiB, "
                  f"{row['median_step_s']:.2f} s/step", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                          "rows": rows}, indent=2) + "\n")
    lines = [f"| frames | peak RSS, windows of {args.window} sharing {args.overlap} (MiB) | peak RSS, whole (MiB) "
             "| s per step, windows | s per step, whole |", "|---|---|---|---|---|"]
    for frames, w, a in zip(args.memory_frames, rows[::2], rows[1::2]):  # (windows, whole) per frame count
        lines.append(f"| {frames} | {w['peak_rss_mib']:.0f} | {a['peak_rss_mib']:.0f} | {w['median_step_s']:.3f} | {a['median_step_s']:.3f} |")
    print("\n".join(lines))
    return 0


# ----------------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    settings = DemoSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=2, help="number of source clips (default 2)")
    parser.add_argument("--frames", type=int, default=64, help="frames per clip, all edited (default 64)")
    parser.add_argument("--tuned-frames", type=int, default=16, help="the first frames, tuned on; the segment length (default 16)")
    parser.add_argument("--window", type=int, help="window of the windows variant (default: --tuned-frames)")
    parser.add_argument("--overlap", type=int, default=4, help="frames neighbouring windows share (default 4)")
    parser.add_argument("--size", type=int, default=settings.size, help="frame size (default 64)")
    parser.add_argument("--train-steps", type=int, default=settings.train_steps, help="tuning steps (default 150)")
    parser.add_argument("--learning-rate", type=float, default=settings.learning_rate)
    parser.add_argument("--sample-steps", type=int, default=settings.steps, help="DDIM inversion and sampling steps (default 25)")
    parser.add_argument("--guidance", type=float, default=settings.guidance_scale)
    parser.add_argument("--seed", type=int, default=2024, help="seed of the clip selection")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--model", default=str(TOY_MODEL), help="the pipeline folder (default the bundled toy model)")
    parser.add_argument("--quick", action="store_true", help="1 clip of 32 frames tuned on 8, 10 tuning and 5 sampling steps: a smoke run")
    parser.add_argument("--memory", action="store_true", help="measure peak RSS and seconds per sampling step against the frame count")
    parser.add_argument("--memory-frames", type=int, nargs="+", default=[16, 32, 64, 128], help="frame counts of --memory")
    parser.add_argument("--memory-steps", type=int, default=4, help="sampling steps measured per frame count (default 4)")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)  # one measurement, in a fresh process
    parser.add_argument("--out", default="benchmarks/long_video.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the toy model is small: one thread is as fast, and steady on a busy machine
    if args.quick:
        args.clips, args.frames, args.tuned_frames, args.train_steps, args.sample_steps = 1, 32, 8, 10, 5
    args.window = args.window or args.tuned_frames
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.window, args.overlap, args.memory_steps, args.model, args.size)))
        return 0
    if not (Path(args.model) / "model_index.json").is_file():
        print(f"error: {args.model} is not a diffusers pipeline folder (no model_index.json); pass --model DIR", file=sys.stderr)
        return 2
    if args.frames % args.tuned_frames:
        print(f"error: --frames {args.frames} is not a multiple of --tuned-frames {args.tuned_frames} (the segments)", file=sys.stderr)
        return 2
    return memory(args) if args.memory else quality(args)


if __name__ == "__main__":
    sys.exit(main())
