"""Measure the toy text-to-image model with the toy world's detector.

Images are sampled with diffusers' own ``StableDiffusionPipeline`` (DDIM, classifier-free guidance with
``""`` as the unconditional prompt), read by :func:`tuneavideo.toyworld.detect.detect_frame`, and
compared with what the prompt asked for.

Command line (prints the result as JSON; ``--report`` also writes the folder's ``TRAINING.md``)::

    python -m tuneavideo.toymodel.evaluate src/tuneavideo/assets/toy-sd --samples 10 --report
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..toyworld.detect import detect_frame
from ..toyworld.metrics import fidelity, intact
from ..toyworld.render import BACKGROUNDS, CAPTION_TEMPLATES, COLOURS, SHAPES, SIZES, fill_template
from .data import HELD_OUT, is_held_out

__all__ = ["ATTRIBUTES", "evaluate_model", "load_pipeline", "make_pipeline", "sample_and_detect", "training_combinations"]

ATTRIBUTES = ("colour", "shape", "background", "size")
#: Bundled model folder.
BUNDLED = Path(__file__).resolve().parents[1] / "assets" / "toy-sd"


def make_pipeline(vae, text_encoder, tokenizer, unet, prediction_type: str = "epsilon"):
    """A ``StableDiffusionPipeline`` with a DDIM scheduler around in-memory components."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .pretrain import scheduler_config

    scheduler = DDIMScheduler.from_config({k: v for k, v in scheduler_config(prediction_type).items() if k != "skip_prk_steps"})
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipeline(folder: str | Path = BUNDLED):
    """``StableDiffusionPipeline.from_pretrained(folder)`` with its scheduler swapped for DDIM."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def _generate(pipe, prompts: Sequence[str], seeds: Sequence[int], num_inference_steps: int, guidance_scale: float,
              batch_size: int) -> np.ndarray:
    images = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start : start + batch_size]]
        out = pipe(chunk, height=64, width=64, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                   generator=generators, output_type="np")
        images.append(np.asarray(out.images))
    return np.concatenate(images) if images else np.zeros((0, 64, 64, 3), np.float32)


def _score(images: np.ndarray, targets: Sequence[dict]) -> tuple[dict, list[dict]]:
    """Per-attribute accuracy of ``images`` against ``targets`` (dicts of attribute -> expected name)."""
    records = []
    for image, target in zip(images, targets):
        detection = detect_frame(image)
        records.append({"target": dict(target), "detected": detection.attributes(), "fidelity": fidelity(image, detection)})
    accuracy: dict[str, float] = {}
    for attribute in ATTRIBUTES:
        judged = [r for r in records if r["target"].get(attribute) is not None]
        if judged:
            accuracy[attribute] = float(np.mean([r["detected"][attribute] == r["target"][attribute] for r in judged]))
    if records:
        accuracy["all"] = float(np.mean([
            all(r["detected"][a] == r["target"][a] for a in ("colour", "shape", "background")) for r in records
        ]))
        accuracy["found"] = float(np.mean([r["detected"]["shape"] is not None for r in records]))
        # a clean drawing of one scene, not a texture or an object drawn twice that the detector still reads
        accuracy["intact"] = float(np.mean([intact(r["fidelity"]) for r in records]))
    return accuracy, records


def sample_and_detect(vae, text_encoder, tokenizer, unet, prompts: Sequence[str], targets: Sequence[dict], *,
                      num_inference_steps: int = 25, guidance_scale: float = 7.5, seed: int = 0,
                      batch_size: int = 16, prediction_type: str = "epsilon") -> dict:
    """Sample one image per prompt (prompt ``i`` with seed ``seed + i``) and score it against ``targets[i]``."""
    pipe = make_pipeline(vae, text_encoder, tokenizer, unet, prediction_type)
    images = _generate(pipe, prompts, [seed + i for i in range(len(prompts))], num_inference_steps, guidance_scale, batch_size)
    accuracy, records = _score(images, targets)
    return {"accuracy": accuracy, "records": records, "images": images}


def training_combinations(count: int = 12, seed: int = 0) -> list[tuple[str, str, str]]:
    """``count`` distinct (colour, shape, background) triples that were seen in training (a seeded pick)."""
    rng = np.random.default_rng(seed)
    seen = [(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS if not is_held_out(c, s, b)]
    picked = rng.choice(len(seen), size=min(count, len(seen)), replace=False)
    return [seen[int(i)] for i in sorted(picked)]


def evaluation_prompts(combinations: Sequence[tuple[str, str, str]], n_samples: int) -> tuple[list[str], list[dict]]:
    """Prompts and targets: sample ``k`` of each combination uses caption template ``k`` (cycling through
    :data:`~tuneavideo.toyworld.render.CAPTION_TEMPLATES`) and, where the template names a size, size ``k // 2``
    (alternating small / large over the templates that have one)."""
    sizes = list(SIZES)
    prompts, targets = [], []
    for colour, shape, background in combinations:
        for k in range(n_samples):
            template = CAPTION_TEMPLATES[k % len(CAPTION_TEMPLATES)]
            size = sizes[(k // len(CAPTION_TEMPLATES) + k) % len(sizes)] if "{size}" in template else None
            prompts.append(fill_template(template, colour=colour, shape=shape, background=background, size=size))
            targets.append({"colour": colour, "shape": shape, "background": background, "size": size})
    return prompts, targets


def evaluate_model(folder: str | Path = BUNDLED, n_samples: int = 8, seed: int = 0, *,
                   combinations: Sequence[tuple[str, str, str]] | str = "held_out",
                   num_inference_steps: int = 50, guidance_scale: float = 7.5, batch_size: int = 16,
                   threads: int | None = None) -> dict:
    """Sample ``n_samples`` images per (colour, shape, background) combination and measure them.

    ``combinations``: ``"held_out"`` (:data:`~tuneavideo.toymodel.data.HELD_OUT`, never seen in training),
    ``"train"`` (12 seen combinations, :func:`training_combinations`), or a list of triples.
    Sample ``j`` overall uses noise seed ``seed + j``. Returns ``{"accuracy": {colour, shape, background,
    size, all, found, intact}, "per_combination": {...}, "settings": {...}}``; ``size`` is judged only on prompts
    that name a size, ``all`` is colour, shape and background all right, ``found`` the rate at which the
    detector found an object at all, ``intact`` the rate of clean drawings of one scene (``metrics.intact``).
    """
    if isinstance(combinations, str):
        if combinations == "held_out":
            combinations = list(HELD_OUT)
        elif combinations == "train":
            combinations = training_combinations()
        else:
            raise ValueError(f"combinations must be 'held_out', 'train' or a list of triples, not {combinations!r}")
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        t0 = time.time()
        pipe = load_pipeline(folder)
        prompts, targets = evaluation_prompts(combinations, n_samples)
        images = _generate(pipe, prompts, [seed + j for j in range(len(prompts))], num_inference_steps, guidance_scale, batch_size)
        accuracy, records = _score(images, targets)
    finally:
        torch.set_num_threads(saved_threads)
    per_combination = {}
    for colour, shape, background in combinations:
        mine = [r for r in records if (r["target"]["colour"], r["target"]["shape"], r["target"]["background"]) == (colour, shape, background)]
        per_combination[f"{colour} {shape} on {background}"] = {
            **{a: float(np.mean([r["detected"][a] == r["target"][a] for r in mine])) for a in ("colour", "shape", "background")},
            "intact": float(np.mean([intact(r["fidelity"]) for r in mine])),
        }
    return {
        "accuracy": accuracy,
        "per_combination": per_combination,
        "settings": {
            "folder": str(folder), "n_samples": n_samples, "seed": seed, "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale, "scheduler": "DDIMScheduler", "negative_prompt": "",
            "combinations": [list(c) for c in combinations], "samples": len(records), "seconds": time.time() - t0,
        },
        "records": records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneavideo.toymodel.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=str(BUNDLED))
    parser.add_argument("--samples", type=int, default=8, help="samples per combination (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--combinations", choices=("held_out", "train"), default="held_out")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="also write FOLDER/TRAINING.md (held-out and train)")
    args = parser.parse_args(argv)
    kinds = ("held_out", "train") if args.report else (args.combinations,)
    results = {}
    for kind in kinds:
        result = evaluate_model(args.folder, args.samples, args.seed, combinations=kind, num_inference_steps=args.steps,
                                guidance_scale=args.guidance, threads=args.threads)
        result.pop("records")
        results[kind] = result
        print(json.dumps({kind: result}, indent=2), flush=True)
    if args.report:
        from .report import write_report

        print(f"wrote {write_report(args.folder, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
