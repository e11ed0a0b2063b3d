"""Whether a toy model's cross-attention marks the object: the blend mask of the object's word against the renderer's.

Local blending (``edit --blend WORD``) and FateZero's fusion keep the source outside a mask made from the named
word's cross-attention (:meth:`tuneavideo.control.AttentionController.blend_mask`: averaged over heads and layers,
3x3 max-pool, normalised, thresholded at 0.3). This records the maps as FateZero does, while the untuned inflated
model inverts each clip with the source prompt (DDIM, the demo's 25 steps), and compares the mask of the object's
shape word, at every recorded step and frame, with the renderer's own object mask (latent pixels at least half
covered): IoU, and the share of the frame the mask covers. Besides the controller's rule (``all`` layers, max-pool,
threshold 0.3) it tries the encoder's or the decoder's layers alone, thresholds 0.5 and 0.7, and no max-pool.

Usage: ``python benchmarks/blend_masks.py --clips 4 --seed 7`` (about 20 s a clip on one CPU core; ``--model DIR``
another pipeline folder). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from toyworld_quality import clip_setup, make_clips, pipeline_folder, tuned_model
from tuneavideo import control
from tuneavideo.demo import TOY_MODEL, DemoSettings
from tuneavideo.toyworld.render import object_coverage, scene_at

#: Which layers' maps make the mask, by the processor's name.
LAYERS = {"all": lambda name: True, "down": lambda name: name.startswith("down"), "up": lambda name: name.startswith("up")}
RULES = [(layers, threshold, pool) for layers in LAYERS for threshold in (0.3, 0.5, 0.7) for pool in (True, False)]


class MapTap:
    """Keeps, for every step, the (layer name, word map ``(f, h', w')``) pairs the controller collects."""

    def __init__(self):
        self.maps: list[tuple[int, str, torch.Tensor]] = []
        cross, collect = control.AttentionController.cross_attention, control.AttentionController.collect
        tap = self

        def cross_attention(controller, probs, name):
            controller.tap_name = name
            return cross(controller, probs, name)

        def collecting(controller, branch, maps, positions):
            before = len(controller.maps.get(branch, []))
            collect(controller, branch, maps, positions)
            if len(controller.maps.get(branch, [])) > before:
                tap.maps.append((controller.step, controller.tap_name, controller.maps[branch][-1].clone()))

        control.AttentionController.cross_attention = cross_attention
        control.AttentionController.collect = collecting


def mask(maps: list[torch.Tensor], size: tuple[int, int], threshold: float, pool: bool) -> torch.Tensor:
    """The controller's rule on ``maps`` with the given threshold and max-pool: ``(f, h, w)`` booleans."""
    largest = max((m.shape[1:] for m in maps), key=lambda s: s[0] * s[1])
    mean = torch.stack([F.interpolate(m[:, None], size=largest, mode="bilinear", align_corners=False) for m in maps]).mean(0)
    if pool:
        mean = F.max_pool2d(mean, kernel_size=3, stride=1, padding=1)
    mean = F.interpolate(mean, size=size, mode="nearest")
    return (mean / mean.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12) > threshold)[:, 0]


def object_masks(clip, size: int, latent: int) -> torch.Tensor:
    """The renderer's object mask per frame at the latents' size: ``(f, latent, latent)``, pixels at least half covered."""
    factor = size // latent
    coverage = np.stack([object_coverage(scene_at(clip, frame), size) for frame in range(clip.num_frames)])
    return torch.from_numpy(coverage.reshape(-1, latent, factor, latent, factor).mean((2, 4)) >= 0.5)


def measure_clip(model: Path, clip, settings: DemoSettings, tap: MapTap) -> dict:
    _, frames, config = clip_setup(clip, settings)
    config.sample.blend = [clip.shape]
    pipe = tuned_model(model, config, frames, None).pipe
    latents, _ = pipe.encode_video(frames)
    context = pipe.encode_prompt([config.video.prompt])
    size = tuple(latents.shape[-2:])
    truth = object_masks(clip, settings.size, size[-1])
    tap.maps.clear()
    control.record_attention(pipe.unet, pipe.scheduler, latents, context, pipe.tokenizer, config.sample,
                             config.video.prompt, latent_size=size)
    result = {}
    for layers, threshold, pool in RULES:
        ious, covers = [], []
        for step in sorted({s for s, _, _ in tap.maps}):
            maps = [m for s, name, m in tap.maps if s == step and LAYERS[layers](name)]
            if maps:
                found = mask(maps, size, threshold, pool)
                ious.append(((found & truth).sum((1, 2)) / (found | truth).sum((1, 2)).clamp_min(1)).float().mean().item())
                covers.append(found.float().mean().item())
        result[(layers, threshold, pool)] = (float(np.mean(ious)), float(np.mean(covers))) if ious else (float("nan"),) * 2
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(TOY_MODEL), help="pipeline folder (default the bundled toy model)")
    parser.add_argument("--clips", type=int, default=4, help="the first N clips of toyworld_quality.py's selection")
    parser.add_argument("--seed", type=int, default=7, help="seed of the clip selection (default 7, the validation clips)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = pipeline_folder(args.model)
    if model is None:
        return 2
    settings, tap = DemoSettings(), MapTap()
    results = [measure_clip(model, clip, settings, tap) for clip, _ in make_clips(args.clips, settings.num_frames, args.seed)]
    print("| layers | threshold | 3x3 max-pool | IoU with the object | share of the frame covered |")
    print("|---|---|---|---|---|")
    for rule in RULES:
        iou, cover = np.nanmean([r[rule][0] for r in results]), np.nanmean([r[rule][1] for r in results])
        print(f"| {rule[0]} | {rule[1]} | {'yes' if rule[2] else 'no'} | {iou:.2f} | {cover:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
