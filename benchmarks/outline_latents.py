"""Whether two object colours stand out of the background the same way in a toy VAE's latents, with and without the
objects' outline.

A DDIM-inverted latent keeps the source's object; a colour edit then asks the model for an object of another colour
there. When the two colours stand out of the background in opposite directions of the latents (the toy VAE trained on
flat objects puts red and green at cosine -0.67), the model finds no object of the new colour where the old one was
and draws it elsewhere (``colour_edits.py``: the motion error ranks with this cosine). This trains a VAE with the
pretraining's own recipe (``PretrainConfig``'s VAE phase, seed 0; ``--vae-steps`` sets its length) on the world with objects drawn with an
outline ``WIDTH`` pixels wide at 64x64 (0: flat objects, the world before the outline), then measures, on validation
scenes (seed 7; 4 per background), the cosine between ``latent(object in colour a) - latent(background)`` and the same
for colour ``b`` over the latent pixels the object covers, for every pair of colours; and the other side of the
trade-off, whether the colour survives the VAE's round trip (encode, decode: the share of those renders whose
colour the detector reads back right).

Usage: ``python benchmarks/outline_latents.py --width 0 1.5 [--vae-steps 1000]`` (about 5 minutes a width and 1000
VAE steps on one CPU core). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from tuneavideo.toymodel import pretrain
from tuneavideo.toymodel.tokenizer import MODEL_MAX_LENGTH, load_tokenizer, save_tokenizer_files
from tuneavideo.toyworld import render
from tuneavideo.toyworld.detect import detect_frame
from tuneavideo.toyworld.render import BACKGROUNDS, COLOURS, object_coverage, random_scene, render_scene, with_attributes

SCENES_PER_BACKGROUND = 4
VALIDATION_SEED = 7


def train_vae(steps: int):
    """A VAE trained as the pretraining's VAE phase trains it, on the world as ``render`` draws it now."""
    config = dataclasses.replace(pretrain.PretrainConfig(), vae_steps=steps, log_every=0)
    torch.manual_seed(config.seed)
    rng, gen = np.random.default_rng(config.seed), torch.Generator().manual_seed(config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(save_tokenizer_files(Path(tmp) / "tokenizer", model_max_length=MODEL_MAX_LENGTH))
        vae, _, _ = pretrain.build_models(config, tokenizer)
    stats = pretrain._train_vae(vae, config, rng, gen, lambda message: None)
    return vae, stats


@torch.no_grad()
def latent(vae, image: np.ndarray) -> torch.Tensor:
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    return vae.encode(pixels).latent_dist.mean[0]


@torch.no_grad()
def round_trip(vae, image: np.ndarray) -> np.ndarray:
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    decoded = vae.decode(vae.encode(pixels).latent_dist.mean).sample[0]
    return ((decoded.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def colour_cosines(vae) -> tuple[dict[str, dict[tuple[str, str], list[float]]], float]:
    """Background name -> colour pair -> the cosines over the background's validation scenes; and the share of the
    renders (every scene in every colour) whose colour the detector reads right after the VAE's round trip."""
    rng = np.random.default_rng(VALIDATION_SEED)
    out, read_right = {}, []
    for background in BACKGROUNDS:
        cosines = {pair: [] for pair in itertools.combinations(COLOURS, 2)}
        for _ in range(SCENES_PER_BACKGROUND):
            scene = random_scene(rng, background=background)
            backdrop = latent(vae, np.clip(np.rint(render.render_background(background)), 0, 255).astype(np.uint8))
            renders = {c: render_scene(with_attributes(scene, colour=c)) for c in COLOURS}
            objects = {c: latent(vae, image) - backdrop for c, image in renders.items()}
            read_right += [detect_frame(round_trip(vae, image)).colour == c for c, image in renders.items()]
            coverage = object_coverage(scene)
            factor = coverage.shape[0] // backdrop.shape[-1]
            covered = torch.from_numpy(coverage.reshape(backdrop.shape[-2], factor, backdrop.shape[-1], factor).mean((1, 3)) >= 0.5)
            for a, b in cosines:
                cosines[a, b].append(float(F.cosine_similarity(objects[a][:, covered].flatten(), objects[b][:, covered].flatten(), dim=0)))
        out[background] = cosines
    return out, float(np.mean(read_right))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, nargs="+", default=[0.0, 1.5], help="outline widths in pixels at 64x64")
    parser.add_argument("--vae-steps", type=int, default=pretrain.PretrainConfig().vae_steps)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| outline (px at 64x64) | VAE reconstruction loss | round trip: colour read right | mean cosine | pairs below 0 | red-green | "
          + " | ".join(f"mean, {b}" for b in BACKGROUNDS) + " |")
    print("|---" * (6 + len(BACKGROUNDS)) + "|")
    for width in args.width:
        with mock.patch.object(render, "OUTLINE_WIDTH", width / 64):
            vae, stats = train_vae(args.vae_steps)
            cosines, read_right = colour_cosines(vae)
        every = np.array([c for pairs in cosines.values() for values in pairs.values() for c in values])
        red_green = [c for pairs in cosines.values() for c in pairs["red", "green"]]
        cells = " | ".join(f"{np.mean([c for v in cosines[b].values() for c in v]):.2f}" for b in BACKGROUNDS)
        print(f"| {width:g} | {stats['final_reconstruction_loss']:.4f} | {read_right:.0%} | {every.mean():.2f} | {(every < 0).mean():.0%} | "
              f"{np.mean(red_green):.2f} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
