"""How far a colour edit moves the object, against how far apart the two colours lie in the VAE's latent space.

The demo's colour edit ("a green circle moving right on blue sky" from a red one) draws the green circle off the
source's track. This measures whether that is the method or the toy model underneath: every clip of
``toyworld_quality.py``'s selection is edited to each other object colour (its shape, background and path kept), by

- ``image-model``: the bundled image model frame by frame (per-frame attention and norms, untuned, each frame
  DDIM-inverted on its own), which knows nothing of Tune-A-Video;
- ``no-tuning``: the inflated video model, untuned, DDIM-inverted (the method without its tuning);
- ``full``: the method (tuned 150 steps as the demo, DDIM-inverted), with ``--variants full``.

Each edit's motion error (as ``toyworld_quality.py``: pixels between the edit's and the source's object, frame by
frame) is set against the **latent distance** of the two colours: the L2 distance, in the UNet's units (scaled
latents), between the VAE's mean latents over the object's latent pixels of the source's first frame rendered in
each colour. A DDIM-inverted latent keeps the source's object in it; a prompt for a colour far from the source's in
latent space finds the source's region least fit for its object. Also set against the **latent cosine**: the cosine
between the two objects' latents minus the background's (1: the target stands out of the background the way the
source does; -1: the opposite way), and the same cosine in RGB, with the background's mean colour.

Usage: ``python benchmarks/colour_edits.py --clips 4`` (about 1 minute a clip on one CPU core without ``full``;
``--seed 7`` the validation clips; ``--out`` JSON). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from toyworld_quality import clip_setup, held_out, make_clips, pipeline_folder, trained_state, tuned_model
from tuneavideo.config import RunConfig
from tuneavideo.demo import SOURCE, TOY_MODEL, DemoSettings
from tuneavideo.toyworld import clip_caption, render_clip, with_attributes
from tuneavideo.toyworld.metrics import score_edit
from tuneavideo.toyworld.render import COLOURS, object_coverage, render_background, scene_at
from tuneavideo.tuning import tune

VARIANTS = ("image-model", "no-tuning", "full")


def object_latent(vae, clip, colour: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's mean latents ``(c,)`` (scaled) over the latent pixels at least half covered by the object, and over
    those it does not touch, in the first frame of ``clip`` rendered with the object in ``colour``."""
    frame = render_clip(with_attributes(clip, colour=colour), size=size)[0]
    pixels = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        latent = vae.encode(pixels).latent_dist.mean[0] * vae.config.scaling_factor  # (c, h, w)
    coverage = object_coverage(scene_at(clip, 0), size)
    factor = size // latent.shape[-1]
    covered = torch.from_numpy(coverage.reshape(latent.shape[-2], factor, latent.shape[-1], factor).mean((1, 3)))
    return latent[:, covered >= 0.5].mean(1), latent[:, covered == 0].mean(1)


def colour_edits(clip) -> list[dict]:
    """Every other object colour, unless the target is a held-out caption combination."""
    excluded = held_out()
    return [{"colour": c} for c in COLOURS if c != clip.colour and (c, clip.shape, clip.background) not in excluded]


def rgb_cosine(source, target, background: np.ndarray) -> float:
    """The cosine between two object colours minus the background's mean colour, in RGB."""
    a, b = np.asarray(source, float) - background, np.asarray(target, float) - background
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def measure_clip(model: Path, clip, variants: list[str], settings: DemoSettings, work: Path) -> list[dict]:
    source, frames, config = clip_setup(clip, settings)
    edits = colour_edits(clip)
    prompts = [clip_caption(with_attributes(clip, **change)) for change in edits]
    attributes = {"shape": clip.shape, "colour": clip.colour, "background": clip.background}
    backdrop = render_background(clip.background, settings.size).reshape(-1, 3).mean(0)
    rows = [{"source": clip.colour, "target": change["colour"], "caption": config.video.prompt,
             "rgb_cosine": rgb_cosine(COLOURS[clip.colour], COLOURS[change["colour"]], backdrop)} for change in edits]
    for variant in variants:
        state = None
        if variant == "full":
            with tempfile.TemporaryDirectory(dir=work) as folder:
                for i, frame in enumerate(source):
                    Image.fromarray(frame).save(Path(folder) / f"{i:03d}.png")
                tuned_config = RunConfig.from_dict(config.to_dict())
                tuned_config.video.path, tuned_config.tune.base_model = folder, str(model)
                tuned_config.tune.steps, tuned_config.tune.learning_rate = settings.train_steps, settings.learning_rate
                tuned_config.tune.seed = settings.seed
                tuned_config.tune.gradient_checkpointing, tuned_config.tune.checkpoint_every = False, 0
                tune(str(model), tuned_config, Path(folder) / "run", progress=False, log=lambda *_: None)
                state = trained_state(Path(folder) / "run")
        tuned = tuned_model(model, config, frames, state, image_model=variant == "image-model")
        latents = tuned.invert(settings.steps, progress=False)
        vc, sample = tuned.config.video, tuned.config.sample
        videos = tuned.pipe(prompts, vc.num_frames, vc.height, vc.width, sample.num_inference_steps,
                            sample.guidance_scale, sample.negative_prompt, sample.eta, None, latents)
        for row, change, video in zip(rows, edits, videos):
            scored = score_edit(source, video, change, attributes).as_dict()
            row[variant] = {k: scored[k] for k in ("alignment", "motion_error")}
        if variant == variants[0]:
            start, background = object_latent(tuned.pipe.vae, clip, clip.colour, settings.size)
            for row in rows:
                target, _ = object_latent(tuned.pipe.vae, clip, row["target"], settings.size)
                row["latent_distance"] = float((target - start).norm())
                # how the two objects stand out of the background: +1 alike, -1 opposite
                row["latent_cosine"] = float(F.cosine_similarity(target - background, start - background, dim=0))
    return rows


def spearman(a, b) -> float:
    ranks = [np.argsort(np.argsort(x)).astype(float) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(TOY_MODEL), help="pipeline folder (default the bundled toy model)")
    parser.add_argument("--clips", type=int, default=4, help="the first N clips of toyworld_quality.py's selection")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the clip selection (as toyworld_quality.py)")
    parser.add_argument("--demo", action="store_true", help="measure the demo's source clip instead of the selection")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS[:2]), choices=VARIANTS)
    parser.add_argument("--out", help="also write the per-edit records and the summary here (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = pipeline_folder(args.model)
    if model is None:
        return 2
    settings = DemoSettings()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        clips = [SOURCE] if args.demo else [clip for clip, _ in make_clips(args.clips, settings.num_frames, args.seed)]
        for index, clip in enumerate(clips):
            rows += measure_clip(model, clip, args.variants, settings, Path(work))
            print(f"clip {index + 1}/{len(clips)} done", file=sys.stderr, flush=True)
    distance = [r["latent_distance"] for r in rows]
    summary = {"edits": len(rows), "latent_distance_mean": float(np.mean(distance))}
    cosine = [r["latent_cosine"] for r in rows]
    rgb = [r["rgb_cosine"] for r in rows]
    print("| variant | motion error (px) | alignment | Spearman(latent distance, motion error) | "
          "Spearman(-latent cosine, motion error) | Spearman(-RGB cosine, motion error) | "
          "motion error, nearest third by latent distance | farthest third |")
    print("|---|---|---|---|---|---|---|---|")
    order = np.argsort(distance)
    third = max(1, len(rows) // 3)
    for variant in args.variants:
        motion = np.array([r[variant]["motion_error"] for r in rows])
        align = np.array([r[variant]["alignment"] for r in rows])
        near, far = motion[order[:third]].mean(), motion[order[-third:]].mean()
        rho = spearman(distance, motion)
        rho_cos, rho_rgb = spearman([-c for c in cosine], motion), spearman([-c for c in rgb], motion)
        summary[variant] = {"motion_error": float(motion.mean()), "alignment": float(align.mean()), "spearman": rho,
                            "spearman_cosine": rho_cos, "spearman_rgb_cosine": rho_rgb,
                            "motion_error_near_third": float(near), "motion_error_far_third": float(far)}
        print(f"| {variant} | {motion.mean():.2f} | {align.mean():.3f} | {rho:.2f} | {rho_cos:.2f} | {rho_rgb:.2f} | {near:.2f} | "
              f"{far:.2f} |")
    print()
    print("| source -> target colour | edits | latent distance | latent cosine | RGB cosine | "
          + " | ".join(f"{v} motion error (px)" for v in args.variants) + " |")
    print("|---|---|---|---|---|" + "---|" * len(args.variants))
    pairs = sorted({(r["source"], r["target"]) for r in rows}, key=lambda p: -np.mean(
        [r["latent_distance"] for r in rows if (r["source"], r["target"]) == p]))
    for pair in pairs:
        picked = [r for r in rows if (r["source"], r["target"]) == pair]
        cells = " | ".join(f"{np.mean([r[v]['motion_error'] for r in picked]):.1f}" for v in args.variants)
        print(f"| {pair[0]} -> {pair[1]} | {len(picked)} | {np.mean([r['latent_distance'] for r in picked]):.2f} | "
              f"{np.mean([r['latent_cosine'] for r in picked]):.2f} | {np.mean([r['rgb_cosine'] for r in picked]):.2f} | {cells} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": vars(args), "summary": summary, "edits": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
