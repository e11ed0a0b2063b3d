"""Editing quality in the toy world, with the paper's ablations, measured by the toy-world detector.

For each source clip (seeded, none of its captions in the pretraining's held-out set) the bundled toy
model is tuned, the clip inverted, and edited three ways (object colour, object shape, background);
the detector scores every edited frame (see ``tuneavideo.toyworld.metrics``). Variants:

- ``full``: the method (tuning, DDIM inversion, sparse-causal attention);
- ``no-tuning``: the inflated model, untuned, with inversion;
- ``no-inversion``: tuned, sampled from random noise;
- ``per-frame-attn``: tuned and sampled with per-frame self-attention instead of sparse-causal;
- ``per-frame-norms``: tuned and sampled with the ResNet GroupNorm statistics per frame instead of pooled
  over the video's frames (sparse-causal attention kept);
- ``image-model``: the image model frame by frame (per-frame attention and norms, no tuning),
  with per-frame inversion;
- ``steps-N``: tuning for N steps (N = 0 is ``no-tuning``);
- ``null-text``: tuned, null-text inversion (Mokady et al.), no attention control;
- ``negative-prompt``: tuned, negative-prompt inversion (Miyake et al.: DDIM-inverted with the source prompt, which
  is then the unconditional embedding of every step), no attention control;
- ``p2p``: tuned, null-text inversion and Prompt-to-Prompt control with decoupled guidance (Video-P2P);
- ``p2p-blend``: ``p2p`` with local blending on the edited attribute's words (the object's shape word for colour
  and shape edits, the background's words for background edits);
- ``fatezero``: tuned, null-text inversion and FateZero's fusion of the maps recorded while inverting, its mask
  from the same words of the source prompt;
- ``p2p-coupled``: ``p2p`` with coupled guidance (the edit's guidance also uses the optimised null embeddings),
  against Video-P2P's decoupled form.

Each edit also reports ``object_psnr``: the PSNR of the background edit inside the source object's pixels (what a
blend should keep).

Usage: ``python benchmarks/toyworld_quality.py --clips 12 --out benchmarks/toyworld_quality.json``
(``--quick`` for a smoke run; ``--workers`` clips run in parallel, one CPU thread each; per-clip results
are kept in ``OUT.partial.json`` as they finish; ``--only N ...`` measures those clips of the selection alone, as
the whole run measures them). Prints markdown tables last: the means; ``full`` minus each other variant, paired clip
by clip, with its 95 % interval over the clips; the motion error by offset.
``--summarise OUT`` prints the tables of an earlier run again, ``--by ATTRIBUTE`` with it also the paired differences
of the clips of each value of a source clip's attribute, ``--against OTHER`` the run's model minus another run's
(``--model``) on the same clips, variant by variant. Several JSONs after ``--summarise`` (and as many after
``--against``, in the same order) are pooled: runs of one model and settings on clip selections of different seeds,
read as one run on all their clips.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tuneavideo.config import RunConfig
from tuneavideo.demo import TOY_MODEL, DemoSettings, write_grid
from tuneavideo.editing import TunedModel
from tuneavideo.loading import load_base
from tuneavideo.toyworld import (BACKGROUNDS, CLIP_CAPTION_TEMPLATES, COLOURS, SHAPES, clip_caption, detect_video, random_clip, render_background, render_clip,
                                 with_attributes)
from tuneavideo.toyworld.metrics import (
    CONSTANT_ATTRIBUTES, fidelity, intact, off_majority, psnr, score_edit, to_uint8_frames,
)
from tuneavideo.tuning import build_pipeline, build_video_unet, latest_checkpoint, tune

#: The ablations measured besides the tuning-steps sweep, in the order of the table.
VARIANTS = ("full", "no-tuning", "no-inversion", "per-frame-attn", "per-frame-norms", "image-model",
            "null-text", "negative-prompt", "p2p", "p2p-blend", "fatezero", "p2p-coupled")
#: Measured unless --variants names others: the method and its ablations (the controlled variants are asked for by name).
DEFAULT_VARIANTS = VARIANTS[:6]
#: The attention-controlled variants: their sample settings (tuneavideo.config.SampleConfig fields) and whether the
#: edit blends on the edited attribute's words.
CONTROLLED = {
    "null-text": ({"inversion": "null-text"}, False),
    "negative-prompt": ({"inversion": "negative-prompt"}, False),
    "p2p": ({"inversion": "null-text", "control": "p2p"}, False),
    "p2p-blend": ({"inversion": "null-text", "control": "p2p"}, True),
    "fatezero": ({"inversion": "null-text", "control": "fatezero"}, True),
    "p2p-coupled": ({"inversion": "null-text", "control": "p2p", "coupled_guidance": True}, False),
}

METRICS = ("alignment", "preservation", "motion_error", "motion_error_found", "consistency", "detected", "intact")


def _worker_init(parent: int) -> None:
    """One torch thread per worker; on Linux a worker ends with the process that started it."""
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent ended before the line above
            os._exit(1)


def held_out() -> set[tuple[str, str, str]]:
    """(colour, shape, background) triples the toy model never saw in pretraining."""
    from tuneavideo.toymodel.data import HELD_OUT

    return {tuple(item) for item in HELD_OUT}


def make_clips(count: int, num_frames: int, seed: int) -> list[tuple]:
    """Source clips and their three edits, none touching a held-out caption combination."""
    excluded = held_out()
    rng = np.random.default_rng(seed)
    clips = []
    while len(clips) < count:
        clip = random_clip(rng, num_frames=num_frames)
        edits = (
            {"colour": str(rng.choice([c for c in COLOURS if c != clip.colour]))},
            {"shape": str(rng.choice([s for s in SHAPES if s != clip.shape]))},
            {"background": str(rng.choice([b for b in BACKGROUNDS if b != clip.background]))},
        )
        targets = [clip] + [with_attributes(clip, **e) for e in edits]
        if any((t.colour, t.shape, t.background) in excluded for t in targets):
            continue
        clips.append((clip, edits))
    return clips


def clip_setup(clip, settings: DemoSettings) -> tuple[np.ndarray, torch.Tensor, RunConfig]:
    """A clip rendered at the demo's size (``(f, h, w, 3)`` uint8), its frames ``(f, 3, h, w)`` in [0, 1], and a
    run config for it with the demo's inversion and sampling settings."""
    source = render_clip(clip, size=settings.size)
    frames = torch.from_numpy(source).permute(0, 3, 1, 2).float() / 255
    config = RunConfig()
    config.video.prompt = clip_caption(clip)
    config.video.num_frames, config.video.width, config.video.height = clip.num_frames, settings.size, settings.size
    config.sample.num_inference_steps = config.sample.num_inversion_steps = settings.steps
    config.sample.guidance_scale, config.sample.seed = settings.guidance_scale, settings.seed
    return source, frames, config


def pipeline_folder(path: str) -> Path | None:
    """``path`` as a diffusers pipeline folder; None, after an ``error:`` line, when it is not one."""
    folder = Path(path)
    if not (folder / "model_index.json").is_file():
        print(f"error: {folder} is not a diffusers pipeline folder (no model_index.json); pass --model DIR", file=sys.stderr)
        return None
    return folder


def blend_words(clip, change: dict, in_source: bool) -> list[str]:
    """The words whose attention marks what ``change`` edits: the object's shape, or the background's words; in the
    source prompt and (unless ``in_source``) the edit's."""
    name = "background" if "background" in change else "shape"
    words = [getattr(clip, name)]
    if not in_source and change.get(name, words[0]) != words[0]:
        words.append(change[name])
    return words


def evaluate(tuned: TunedModel, clip, edits, source: np.ndarray, blend: bool = False, template: int = 0) -> dict:
    """Invert (unless disabled), sample the three edits and the source prompt in one batch, score them.

    Every prompt starts from the same latents: the inverted source, or one seeded noise draw. With another inversion
    or attention control (the controlled variants), each prompt is sampled on its own by ``TunedModel.sample``;
    ``blend``: blending on :func:`blend_words`."""
    sample = tuned.config.sample
    vc = tuned.config.video
    tuned.inverted = None
    prompts = [clip_caption(with_attributes(clip, **change), template) for change in edits] + [clip_caption(clip, template)]
    if sample.inversion != "ddim" or sample.control != "none":
        settings = [replace(sample, blend=blend_words(clip, change, sample.control == "fatezero") if blend else [])
                    for change in edits] + [replace(sample, blend=blend_words(clip, {}, True) if blend else [])]
        videos = torch.stack([tuned.sample(prompt, settings_i, progress=False) for prompt, settings_i in zip(prompts, settings)])
        return {**score(clip, edits, source, videos), "prompts": prompts[: len(edits)]}
    if sample.use_inversion:
        latents = tuned.invert(sample.num_inversion_steps, progress=False)
    else:
        scale = tuned.pipe.latent_scale
        shape = (1, tuned.pipe.unet.config.in_channels, vc.num_frames, vc.height // scale, vc.width // scale)
        latents = torch.randn(shape, generator=torch.Generator().manual_seed(sample.seed))
    videos = tuned.pipe(prompts, vc.num_frames, vc.height, vc.width, sample.num_inference_steps, sample.guidance_scale,
                        sample.negative_prompt, sample.eta, None, latents)
    return {**score(clip, edits, source, videos), "prompts": prompts[: len(edits)]}


def score(clip, edits, source: np.ndarray, videos: torch.Tensor) -> dict:
    """The detector's scores of the edits (``videos[:-1]``) and the PSNR of the source prompt's video (the last)."""
    attributes = {"shape": clip.shape, "colour": clip.colour, "background": clip.background}
    scores = [score_edit(source, video, change, attributes).as_dict() for change, video in zip(edits, videos)]
    result = {name: float(np.nanmean([s[name] for s in scores])) for name in METRICS}
    for change, scored in zip(edits, scores):  # alignment of each kind of edit (colour, shape, background)
        result[f"alignment_{'_'.join(change)}"] = scored["alignment"]
    result["psnr"] = psnr(source, to_uint8_frames(videos[-1]))
    background = [video for change, video in zip(edits, videos) if "background" in change]
    if background:  # the background edit inside the source object's pixels
        inside = np.abs(source.astype(np.float64) - render_background(clip.background, source.shape[1])[None]).sum(-1) > 30
        result["object_psnr"] = psnr(source[inside], to_uint8_frames(background[0])[inside])
    # what lowers consistency: each edit's frames off its video's majority, and the share of frames per attribute
    frames = [to_uint8_frames(video) for video in videos[: len(edits)]]
    detections = [detect_video(video) for video in frames]
    flips = [off_majority(found) for found in detections]
    for name in CONSTANT_ATTRIBUTES:
        result[f"off_majority_{name}"] = float(np.mean([sum(f["attribute"] == name for f in edit_flips) / len(found)
                                                        for edit_flips, found in zip(flips, detections)]))
    result["off_majority"] = [dict(flip, edit=index) for index, edit_flips in enumerate(flips) for flip in edit_flips]
    # the object's size against the source's, frame by frame: no edit asks for another size, and preservation, which
    # follows the captions, leaves size out
    source_sizes = [d.size for d in detect_video(source)]
    result["size_kept"] = float(np.mean([np.mean([d.size == size for d, size in zip(found, source_sizes)])
                                         for found in detections]))
    # each frame's dB against a clean render of the scene read in it (`intact`, from score_edit, counts those above
    # metrics.BROKEN_BELOW_DB): for the JSON and the grids' labels
    result["fidelity"] = [[None if (value := fidelity(frame, d)) is None else round(value, 2)
                           for frame, d in zip(video, found)] for video, found in zip(frames, detections)]
    result["frames"] = frame_positions(source, videos[: len(edits)])
    result["_videos"] = frames  # for --grids; run_clip takes it out
    return result


def frame_positions(source: np.ndarray, edits) -> dict:
    """Per frame (from frame 1 on), averaged over the edits whose object was found: ``offset``, how far the source's
    object is from where it was in frame 0; ``error``, how far the edit's object is from the source's; ``pull``, how
    much closer to frame 0's position the edit's object is than the source's (positive: drawn toward frame 0)."""
    found = [d.centroid for d in detect_video(source)]
    start = found[0]
    rows = {"offset": [], "error": [], "pull": []}
    edit_found = [[d.centroid for d in detect_video(to_uint8_frames(video))] for video in edits]
    for f in range(1, len(found)):
        if start is None or found[f] is None:
            continue
        offset = float(np.hypot(found[f][0] - start[0], found[f][1] - start[1]))
        here = [e[f] for e in edit_found if e[f] is not None]
        if not here:
            continue
        rows["offset"].append(offset)
        rows["error"].append(float(np.mean([np.hypot(c[0] - found[f][0], c[1] - found[f][1]) for c in here])))
        rows["pull"].append(float(np.mean([offset - np.hypot(c[0] - start[0], c[1] - start[1]) for c in here])))
    return rows


#: Bins of the source object's distance from its frame-0 position (pixels) for :func:`motion_by_offset`.
OFFSET_BINS = (0.0, 4.0, 8.0, 16.0, 32.0, float("inf"))


def motion_by_offset(per_clip: list[dict], variant: str) -> list[dict]:
    """Mean motion error and pull toward frame 0 of ``variant``, by the source object's distance from frame 0."""
    rows = [(o, e, p) for clip in per_clip for o, e, p in zip(*(clip[variant]["frames"][k] for k in ("offset", "error", "pull")))]
    table = []
    for lo, hi in zip(OFFSET_BINS, OFFSET_BINS[1:]):
        inside = [(e, p) for o, e, p in rows if lo <= o < hi]
        if inside:
            table.append({"offset": [lo, hi], "frames": len(inside), "error": float(np.mean([e for e, _ in inside])),
                          "pull": float(np.mean([p for _, p in inside]))})
    return table


def tuned_model(base_folder: Path, config: RunConfig, frames: torch.Tensor, state: dict | None, *,
                per_frame: bool = False, per_frame_norms: bool = False, image_model: bool = False) -> TunedModel:
    base = load_base(base_folder)
    unet = build_video_unet(base, frame_norms="per-frame" if per_frame_norms else "pooled")
    if state is not None:
        params = dict(unet.named_parameters())
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor)
    if per_frame or image_model:
        unet.set_frame_attention("per-frame")
    if image_model:
        unet.pool_norm_over_frames = False
    pipe = build_pipeline(base, unet)
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        module.eval().requires_grad_(False)
    return TunedModel(pipe, config, Path("."), frames, None, torch.float32)


def trained_state(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    adapter = run_dir / "adapter.safetensors"
    if adapter.exists():
        return load_file(adapter)
    return torch.load(latest_checkpoint(run_dir), weights_only=True)["trainable"]


def clip_run(index: int, clip, args, work: Path) -> tuple[np.ndarray, torch.Tensor, RunConfig]:
    """Clip ``index`` rendered (``(f, h, w, 3)`` uint8), its frames ``(f, 3, h, w)`` in [0, 1], and the run config
    every variant starts from: its frames written to ``work``, the model ``args.model``, the run's tuning and sampling
    settings (the tuning steps left to the caller)."""
    source = render_clip(clip, size=args.size)
    frames_dir = work / f"clip-{index}"
    frames_dir.mkdir()
    for i, frame in enumerate(source):
        Image.fromarray(frame).save(frames_dir / f"{i:03d}.png")
    frames = torch.from_numpy(source).permute(0, 3, 1, 2).float() / 255

    config = RunConfig()
    config.video.path, config.video.prompt = str(frames_dir), clip_caption(clip, args.caption_template)
    config.video.num_frames, config.video.width, config.video.height = clip.num_frames, args.size, args.size
    config.tune.base_model, config.tune.learning_rate, config.tune.seed = str(args.model), args.learning_rate, 33
    config.tune.gradient_checkpointing, config.tune.checkpoint_every = False, 0
    config.sample.num_inference_steps = config.sample.num_inversion_steps = args.sample_steps
    config.sample.guidance_scale = args.guidance
    return source, frames, config


def run_clip(index: int, clip, edits, args, work: Path) -> dict:
    source, frames, config = clip_run(index, clip, args, work)
    results: dict[str, dict] = {}
    log = lambda *_: None  # noqa: E731
    model, wanted = Path(args.model), set(args.variants)
    # The steps sweep: one tuning run, interrupted at each N and resumed (the project's own --resume path).
    sweep = sorted(set(args.steps) | {args.full_steps})
    run_dir = work / f"run-{index}"
    config.tune.steps = sweep[-1]
    done = 0
    states = {}
    for n in sweep:
        if n > done:
            tune(str(model), config, run_dir, resume=done > 0, stop_after=n - done, progress=False, log=log)
            done = n
        states[n] = trained_state(run_dir) if n > 0 else None
    for n in sweep:
        if n in args.steps:
            results[f"steps-{n}"] = evaluate(tuned_model(model, config, frames, states[n]), clip, edits, source, template=args.caption_template)
    if "full" in wanted:
        results["full"] = results.get(f"steps-{args.full_steps}") or evaluate(
            tuned_model(model, config, frames, states[args.full_steps]), clip, edits, source, template=args.caption_template)
    if "no-tuning" in wanted:
        results["no-tuning"] = results.get("steps-0") or evaluate(tuned_model(model, config, frames, None), clip, edits, source, template=args.caption_template)
    if "no-inversion" in wanted:
        no_inv = RunConfig.from_dict(config.to_dict())
        no_inv.sample.use_inversion = False
        results["no-inversion"] = evaluate(tuned_model(model, no_inv, frames, states[args.full_steps]), clip, edits, source, template=args.caption_template)
    if "image-model" in wanted:
        results["image-model"] = evaluate(tuned_model(model, config, frames, None, image_model=True), clip, edits, source, template=args.caption_template)
    if "per-frame-attn" in wanted:  # tuned with per-frame attention as well as sampled with it
        per_frame_state = _tune_ablation(model, config, args.full_steps, work / f"run-{index}-per-frame", frame_attention="per-frame")
        results["per-frame-attn"] = evaluate(tuned_model(model, config, frames, per_frame_state, per_frame=True), clip, edits, source, template=args.caption_template)
    for variant, (changes, blend) in CONTROLLED.items():
        if variant in wanted:
            controlled = RunConfig.from_dict(config.to_dict())
            controlled.sample = replace(controlled.sample, **changes)
            results[variant] = evaluate(tuned_model(model, controlled, frames, states[args.full_steps]), clip, edits, source, blend, template=args.caption_template)
    if "per-frame-norms" in wanted:  # likewise tuned with per-frame GroupNorm statistics
        norms_state = _tune_ablation(model, config, args.full_steps, work / f"run-{index}-frame-norms", frame_norms="per-frame")
        results["per-frame-norms"] = evaluate(tuned_model(model, config, frames, norms_state, per_frame_norms=True), clip, edits, source, template=args.caption_template)
    videos, names = {}, {}  # a variant may share its result with a step of the sweep: one grid row, both names
    for variant, result in results.items():
        if id(result) not in videos:
            videos[id(result)] = result.pop("_videos")
        names.setdefault(id(result), []).append(variant)
    if args.grids:
        rows = [("source: " + clip_caption(clip, args.caption_template), source)]
        for key, edited in videos.items():
            result = results[names[key][0]]
            for number, (change, video) in enumerate(zip(edits, edited)):
                # compact, broken frames first, so that the label fits above its 8 frames: "broken: 6 16.6 dB;
                # off: 5 triangle, 6 triangle/orange/small" (each attribute's values are names of their own)
                broken = ", ".join(f"{f}" + ("" if value is None else f" {value:.1f} dB")
                                   for f, value in enumerate(result["fidelity"][number]) if not intact(value))
                off_by_frame: dict[int, list[str]] = {}
                for flip in result["off_majority"]:
                    if flip["edit"] == number:
                        off_by_frame.setdefault(flip["frame"], []).append(str(flip["value"]))
                off = ", ".join(f"{f} {'/'.join(values)}" for f, values in off_by_frame.items())
                notes = "; ".join(part for part in (broken and f"broken: {broken}", off and f"off: {off}") if part)
                rows.append((f"{' = '.join(names[key])}: {clip_caption(with_attributes(clip, **change), args.caption_template)}"
                             + (f"  ({notes})" if notes else ""), video))
        Path(args.grids).mkdir(parents=True, exist_ok=True)
        write_grid(Path(args.grids) / f"clip-{index + 1:02d}.png", rows)
    return results


def _tune_ablation(model: Path, config: RunConfig, steps: int, run_dir: Path, **tune_changes) -> dict:
    """Tune ``steps`` steps with ``config.tune`` changed by ``tune_changes``; the trained tensors."""
    changed = RunConfig.from_dict(config.to_dict())
    changed.tune.steps = steps
    for name, value in tune_changes.items():
        setattr(changed.tune, name, value)
    tune(str(model), changed, run_dir, progress=False, log=lambda *_: None)
    return trained_state(run_dir)


#: The metrics whose paired differences the second table gives (point 4 of the ruler's criteria compares these), and
#: the confidence of their intervals.
PAIRED_METRICS = ("alignment", "motion_error", "consistency")
CONFIDENCE = 0.95
#: Compared as well where both sides measured them (runs before they were recorded did not): the share of edit frames
#: whose object's size differs from its video's majority, the share that keep the source's size, the share that
#: are a clean drawing of one scene (metrics.intact), the share with an object at all, and the motion error on the
#: frames where both the source and the edit show one (a frame without an object costs motion_error the frame's
#: diagonal, and alignment the frame).
PAIRED_IF_MEASURED = ("off_majority_size", "size_kept", "intact", "detected", "motion_error_found")
PAIRED_LABELS = {"alignment": "alignment", "motion_error": "motion error (px)", "consistency": "consistency",
                 "off_majority_size": "frames off in size", "size_kept": "size kept", "intact": "intact frames",
                 "detected": "frames with an object", "motion_error_found": "motion error, frames with an object (px)"}


def _paired_metrics(*rows: dict) -> tuple[str, ...]:
    return PAIRED_METRICS + tuple(m for m in PAIRED_IF_MEASURED if all(m in row for row in rows))


def t_quantile(probability: float, dof: int) -> float:
    """Student's t quantile (``probability`` > 0.5): exact for 1 and 2 degrees of freedom (closed forms), else the
    Cornish-Fisher expansion around the normal quantile to the fourth order in 1/dof (Abramowitz & Stegun 26.7.5),
    0.004 below the exact 97.5 % quantile at 3 degrees of freedom and within 1e-5 of it from 11 (12 clips) on."""
    if dof == 1:
        return math.tan(math.pi * (probability - 0.5))
    if dof == 2:
        return (2 * probability - 1) / math.sqrt(2 * probability * (1 - probability))
    z = float(torch.special.ndtri(torch.tensor(probability, dtype=torch.float64)))
    terms = ((z ** 3 + z) / 4,
             (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
             (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
             (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160)
    return z + sum(term / dof ** power for power, term in enumerate(terms, 1))


def paired_differences(per_clip: list[dict], base: str = "full", confidence: float = CONFIDENCE) -> dict[str, dict]:
    """``base`` minus each other variant, clip by clip: for each of :data:`PAIRED_METRICS` the mean difference over
    the clips and its two-sided Student-t confidence interval (the clips are the samples; each clip's three edits are
    averaged first, so edits of one clip do not count as independent)."""
    others = [v for v in VARIANTS if v in per_clip[0] and v != base]
    return {other: {metric: mean_interval([clip[base][metric] - clip[other][metric] for clip in per_clip], confidence)
                    for metric in _paired_metrics(*(clip[v] for clip in per_clip for v in (base, other)))}
            for other in others}


def model_differences(per_clip: list[dict], other_per_clip: list[dict], confidence: float = CONFIDENCE) -> dict[str, dict]:
    """One model's run minus another's on the same clips, variant by variant (those both measured), paired clip by
    clip as in :func:`paired_differences`."""
    if len(per_clip) != len(other_per_clip):
        raise ValueError(f"the runs measured {len(per_clip)} and {len(other_per_clip)} clips")
    shared = [v for v in per_clip[0] if v in other_per_clip[0]]
    return {variant: {metric: mean_interval([mine[variant][metric] - theirs[variant][metric]
                                             for mine, theirs in zip(per_clip, other_per_clip)], confidence)
                      for metric in _paired_metrics(*(clip[variant] for clip in per_clip + other_per_clip))}
            for variant in shared}


def mean_interval(values, confidence: float = CONFIDENCE) -> dict[str, float]:
    """The mean of ``values`` (one per clip) and its two-sided Student-t confidence interval (NaN for one value)."""
    values = np.asarray(values, dtype=np.float64)
    count = len(values)
    spread = (values.std(ddof=1) / np.sqrt(count) * t_quantile(0.5 + confidence / 2, count - 1)
              if count > 1 else float("nan"))
    return {"mean": float(values.mean()), "low": float(values.mean() - spread), "high": float(values.mean() + spread)}


def paired_table(paired: dict[str, dict], clips: int, base: str = "full", head: str | None = None) -> str:
    """The paired differences (at :data:`CONFIDENCE`) as markdown: mean [interval] per metric; ``head`` names the
    first column (default: ``base`` minus the row's variant)."""
    head = head or f"{base} minus"
    names = [name for name in PAIRED_LABELS if any(name in metrics for metrics in paired.values())]
    lines = [f"| {head} ({clips} clips, {CONFIDENCE * 100:g} % interval) | "
             + " | ".join(PAIRED_LABELS[name] for name in names) + " |", "|---|" + "---|" * len(names)]
    for other, metrics in paired.items():
        cells = " | ".join("-" if name not in metrics else
                           f"{metrics[name]['mean']:+.2f} [{metrics[name]['low']:+.2f}, {metrics[name]['high']:+.2f}]"
                           if name.startswith("motion_error") else
                           f"{metrics[name]['mean']:+.3f} [{metrics[name]['low']:+.3f}, {metrics[name]['high']:+.3f}]"
                           for name in names)
        lines.append(f"| {other} | {cells} |")
    return "\n".join(lines)


#: The settings that choose a run's clips: two runs with these alike measured the same clips.
CLIP_SETTINGS = ("clips", "frames", "size", "seed", "only")

#: Settings in which runs pooled by ``--summarise`` may differ: which clips, which variants (the ones all measured
#: are pooled) and how the run was carried out or printed.
POOLED_SETTINGS = ("seed", "clips", "only", "variants", "workers", "out", "grids", "summarise", "by", "against")

#: Attributes of a source clip that ``--by`` can group the clips by.
CLIP_ATTRIBUTES = ("shape", "colour", "size", "background", "path")


def group_clips(per_clip: list[dict], clips: list, attribute: str) -> dict[str, list[dict]]:
    """The per-clip results grouped by the source clip's ``attribute`` (values in sorted order)."""
    groups: dict[str, list[dict]] = {}
    for clip, result in sorted(zip(clips, per_clip), key=lambda pair: getattr(pair[0], attribute)):
        groups.setdefault(getattr(clip, attribute), []).append(result)
    return groups


def table(summary: dict[str, dict]) -> str:
    lines = ["| variant | alignment | colour / shape / background edits | preservation | motion error (px) "
             "| motion error, frames with an object (px) | consistency | detected | PSNR (source prompt, dB) "
             "| object PSNR, background edit (dB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in summary.items():
        found = m.get("motion_error_found", float("nan"))
        lines.append(f"| {name} | {m['alignment']:.3f} | {m['alignment_colour']:.2f} / {m['alignment_shape']:.2f} / "
                     f"{m['alignment_background']:.2f} | {m['preservation']:.3f} | {m['motion_error']:.2f} | "
                     f"{found:.2f} | {m['consistency']:.3f} | {m['detected']:.3f} | {m['psnr']:.2f} | "
                     f"{m.get('object_psnr', float('nan')):.2f} |")
    return "\n".join(lines)


def off_majority_table(summary: dict[str, dict]) -> str:
    """Per variant, the share of edit frames whose shape, colour, size or background differs from their video's
    majority (size is not part of consistency), the share that keep the source's size, and the share that are intact
    (``metrics.intact``)."""
    lines = ["| variant | frames off the video's majority: " + " | ".join(CONSTANT_ATTRIBUTES)
             + " | size kept (the source's, frame by frame) | intact frames (a clean drawing of one scene) |",
             "|---|" + "---|" * (len(CONSTANT_ATTRIBUTES) + 2)]
    for name, m in summary.items():
        if f"off_majority_{CONSTANT_ATTRIBUTES[0]}" in m:
            lines.append(f"| {name} | " + " | ".join(f"{m.get(f'off_majority_{a}', float('nan')):.3f}"
                                                     for a in CONSTANT_ATTRIBUTES)
                         + f" | {m.get('size_kept', float('nan')):.3f} | {m.get('intact', float('nan')):.3f} |")
    return "\n".join(lines)


def offset_table(by_offset: dict[str, list[dict]]) -> str:
    """Motion error / pull toward frame 0 (px) per variant, by the source object's distance from frame 0."""
    bins = [tuple(row["offset"]) for row in max(by_offset.values(), key=len)]
    head = " | ".join(f"{lo:g}-{hi:g} px" if hi != float("inf") else f">= {lo:g} px" for lo, hi in bins)
    lines = [f"| variant | {head} |", "|---|" + "---|" * len(bins)]
    for name, rows in by_offset.items():
        cells = {tuple(r["offset"]): f"{r['error']:.1f} / {r['pull']:+.1f}" for r in rows}
        lines.append(f"| {name} | " + " | ".join(cells.get(b, "-") for b in bins) + " |")
    return "\n".join(lines)


def settings_problem(args) -> str | None:
    """What is wrong with a run's counts (clips, workers, steps, ``--only``), as one line for ``error:``; None if
    nothing is."""
    if args.clips < 1:
        return f"--clips must be at least 1, not {args.clips}"
    if args.workers < 1:
        return f"--workers must be at least 1, not {args.workers}"
    if args.sample_steps < 1:
        return f"--sample-steps must be at least 1, not {args.sample_steps}"
    if args.full_steps < 0 or any(n < 0 for n in args.steps):
        return f"tuning steps cannot be negative (--full-steps {args.full_steps}, --steps {' '.join(map(str, args.steps))})"
    if args.only and not all(1 <= n <= args.clips for n in args.only):
        return f"--only takes clip numbers from 1 to --clips ({args.clips}), not {' '.join(map(str, args.only))}"
    return None


def build_parser() -> argparse.ArgumentParser:
    """The command line, whose defaults are the benchmark's settings (``lost_objects.py`` reads them too)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=12, help="number of source clips (default 12)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    parser.add_argument("--size", type=int, default=64, help="frame size (default 64)")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 50, 100, 200, 500], help="tuning steps to sweep")
    parser.add_argument("--full-steps", type=int, default=DemoSettings.train_steps, help="tuning steps of the full method")
    parser.add_argument("--learning-rate", type=float, default=DemoSettings.learning_rate)
    parser.add_argument("--sample-steps", type=int, default=DemoSettings.steps, help="DDIM inversion and sampling steps")
    parser.add_argument("--guidance", type=float, default=DemoSettings.guidance_scale)
    parser.add_argument("--caption-template", type=int, default=0, choices=range(len(CLIP_CAPTION_TEMPLATES)),
                        help="the clip caption template of the source and edit prompts (default 0: \"a red circle "
                             "moving right on green grass\"; 1 also names the size: \"a large red circle ...\")")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the clip selection")
    parser.add_argument("--only", type=int, nargs="+", metavar="N",
                        help="measure only these clips of the selection, numbered from 1 as the progress lines and "
                             "--grids name them (a place to look again, not a result)")
    parser.add_argument("--quick", action="store_true", help="2 clips, steps 0 and 20, 10 sampling steps: a smoke run")
    parser.add_argument("--workers", type=int, default=2, help="clips tuned in parallel, one CPU thread each (default 2)")
    parser.add_argument("--model", default=str(TOY_MODEL), help="the pipeline folder to measure (default the bundled toy model)")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS,
                        help=f"variants besides the steps sweep (default {' '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--out", default="benchmarks/toyworld_quality.json", help="where to write the JSON")
    parser.add_argument("--grids", metavar="DIR", help="also write each clip's edits, every variant, as DIR/clip-NN.png "
                                                       "(broken frames, then frames off their video's majority, named beside the prompt)")
    parser.add_argument("--summarise", metavar="JSON", nargs="+",
                        help="measure nothing: print the tables of an earlier run's JSON (several: runs of one model and "
                             "settings on clips of different --seed, pooled)")
    parser.add_argument("--by", choices=CLIP_ATTRIBUTES,
                        help="with --summarise: also the paired differences of the clips of each value of this attribute "
                             "of the source clip (chosen after the fact: a place to look, not a result)")
    parser.add_argument("--against", metavar="JSON", nargs="+",
                        help="with --summarise: also that run's model minus this other run's, variant by variant, paired "
                             "clip by clip (both runs on the same clips: --clips, --frames, --size, --seed and --only "
                             "alike; one JSON for each --summarise JSON, in the same order)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.summarise:
        if args.against and len(args.against) != len(args.summarise):
            print(f"error: --against takes one JSON for each --summarise JSON ({len(args.summarise)}), not "
                  f"{len(args.against)}", file=sys.stderr)
            return 2
        try:
            runs = [read_run(name) for name in args.summarise]
            others = [read_run(name) for name in args.against or []]
            for (name, run), (other_name, other) in zip(zip(args.summarise, runs), zip(args.against or [], others)):
                differ = [key for key in CLIP_SETTINGS if run["settings"].get(key) != other["settings"].get(key)]
                if differ:
                    raise ValueError(f"{name} and {other_name} measured different clips ({', '.join(differ)} differ); "
                                     "compare runs of the same --clips, --frames, --size and --seed")
            report = pool_runs(runs, args.summarise)
            other = pool_runs(others, args.against) if others else None
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print_tables(report)
        if other:
            print(f"\n{report['settings']['model']} minus {other['settings']['model']}:\n")
            differences = model_differences(report["per_clip"], other["per_clip"])
            print(paired_table(differences, len(report["per_clip"]), head="this model minus the other, variant"))
        if args.by:
            clips = [clip for run in runs for clip, _ in make_clips(run["settings"]["clips"], run["settings"]["frames"],
                                                                     run["settings"]["seed"])]
            for value, per_clip in group_clips(report["per_clip"], clips, args.by).items():
                print(f"\nsource {args.by} {value}:\n")
                print(paired_table(paired_differences(per_clip), len(per_clip)))
                group = summarise_clips(per_clip)["summary"]
                if any(f"off_majority_{CONSTANT_ATTRIBUTES[0]}" in m for m in group.values()):
                    print()
                    print(off_majority_table(group))
        return 0
    for option in ("by", "against"):
        if getattr(args, option):
            print(f"error: --{option} works on the tables of --summarise; pass --summarise JSON with it", file=sys.stderr)
            return 2
    args.model = str(Path(args.model).resolve())
    if not (Path(args.model) / "model_index.json").is_file():
        print(f"error: {args.model} is not a diffusers pipeline folder (no model_index.json); pass --model DIR", file=sys.stderr)
        return 2
    if args.grids and Path(args.grids).exists() and not Path(args.grids).is_dir():
        print(f"error: --grids {args.grids} is a file; pass a folder for the clips' grids", file=sys.stderr)
        return 2
    if args.quick:
        args.clips, args.steps, args.full_steps, args.sample_steps = 2, [0, 20], 20, 10
    if problem := settings_problem(args):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    clips = make_clips(args.clips, args.frames, args.seed)
    numbers = sorted(set(args.only)) if args.only else range(1, len(clips) + 1)  # the clips measured
    per_clip: list[dict | None] = [None] * len(numbers)
    partial = Path(args.out).with_suffix(".partial.json")
    partial.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("workers", "out", "grids")}
    if partial.is_file():  # an interrupted run with the same settings: keep the clips it measured
        earlier = json.loads(partial.read_text())
        if {k: v for k, v in earlier["settings"].items() if k not in ("workers", "out", "grids")} == settings:
            per_clip = earlier["per_clip"]
            print(f"resuming {partial}: {sum(c is not None for c in per_clip)} of {len(numbers)} clips already measured")
    errors = {}
    todo = [position for position, result in enumerate(per_clip) if result is None]
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(
            args.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
            initargs=(os.getpid(),)) as pool:
        jobs = {pool.submit(run_clip, numbers[position] - 1, *clips[numbers[position] - 1], args, Path(tmp)): position
                for position in todo}
        for done, job in enumerate(as_completed(jobs), 1):
            position = jobs[job]
            index = numbers[position] - 1
            try:
                per_clip[position] = job.result()
            except Exception:  # noqa: BLE001 - one clip's failure must not lose the others
                errors[index] = traceback.format_exc()
                print(f"clip {index + 1} ({clip_caption(clips[index][0])}) failed:\n{errors[index]}", file=sys.stderr, flush=True)
                continue
            print(f"[{time.perf_counter() - began:6.0f} s] clip {done}/{len(todo)} done: {clip_caption(clips[index][0])}",
                  flush=True)
            partial.write_text(json.dumps({"settings": vars(args), "per_clip": per_clip}, indent=2) + "\n")
    if errors:
        print(f"error: {len(errors)} clip(s) failed (tracebacks above); the measured ones are in {partial}, "
              "and running the same command again measures only the rest", file=sys.stderr)
        return 1
    report = {"settings": vars(args), "seconds": round(time.perf_counter() - began, 1), **summarise_clips(per_clip)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    partial.unlink(missing_ok=True)
    print_tables(report)
    return 0


def summarise_clips(per_clip: list[dict]) -> dict:
    """A run's ``summary`` (each variant's mean of each metric over the clips) and ``motion_by_offset``."""
    variants = list(per_clip[0])
    order = [v for v in VARIANTS if v in variants] + sorted(
        (v for v in variants if v.startswith("steps-")), key=lambda v: int(v.split("-")[1]))
    summary = {v: {m: float(np.nanmean([c[v][m] for c in per_clip])) for m in per_clip[0][v]
                   if m not in ("frames", "off_majority", "prompts", "fidelity")} for v in order}
    return {"summary": summary, "motion_by_offset": {v: motion_by_offset(per_clip, v) for v in order},
            "per_clip": per_clip}


def read_run(name: str) -> dict:
    """A JSON this script wrote (``--out``), or a ValueError naming what is wrong with it."""
    try:
        run = json.loads(Path(name).read_text())
        if not isinstance(run, dict) or not {"settings", "summary", "motion_by_offset", "per_clip"} <= set(run):
            raise ValueError("no settings, summary, motion_by_offset and per_clip")
        if not isinstance(run["settings"], dict) or not run["per_clip"]:
            raise ValueError("its settings or its clips are missing")
    except (OSError, ValueError) as error:
        raise ValueError(f"{name} is not a JSON written by this script ({error}); pass its --out file") from None
    run["settings"].setdefault("caption_template", 0)  # runs from before the option used the first template
    return run


def pool_runs(runs: list[dict], names: list[str]) -> dict:
    """Runs of one model and settings on clip selections of different seeds, as one run on all their clips: the
    variants every run measured, ``settings`` those of the first run with ``clips`` the total and ``seed`` the list
    of seeds."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]["settings"]
    for name, run in zip(names[1:], runs[1:]):
        differ = [key for key, value in run["settings"].items()
                  if key not in POOLED_SETTINGS and first.get(key) != value]
        if differ:
            raise ValueError(f"{name} and {names[0]} differ in {', '.join(differ)}; pool runs of one model and settings")
    seeds = [run["settings"]["seed"] for run in runs]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"two of {', '.join(names)} measured clips of the same seed; pool runs of different --seed")
    shared = [v for v in runs[0]["per_clip"][0] if all(v in run["per_clip"][0] for run in runs)]
    if not shared:
        raise ValueError(f"{', '.join(names)} have no variant in common")
    per_clip = [{v: clip[v] for v in shared} for run in runs for clip in run["per_clip"]]
    settings = {**first, "clips": len(per_clip), "seed": seeds, "variants": [v for v in first.get("variants", shared) if v in shared]}
    return {"settings": settings, **summarise_clips(per_clip)}


def print_tables(report: dict) -> None:
    """The summary, the paired differences from ``full`` (where measured) and the motion error by offset."""
    print(table(report["summary"]))
    if any(f"off_majority_{CONSTANT_ATTRIBUTES[0]}" in m for m in report["summary"].values()):
        print()
        print(off_majority_table(report["summary"]))
    per_clip = report["per_clip"]
    if "full" in per_clip[0] and len(per_clip) > 1:
        print()
        print(paired_table(paired_differences(per_clip), len(per_clip)))
    print()
    print(offset_table(report["motion_by_offset"]))


if __name__ == "__main__":
    sys.exit(main())
