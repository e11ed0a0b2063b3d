"""How GroupNorm statistics pooled over a video's frames couple the frames, measured on toy-world edits.

The inflated UNet (untuned, as ``no-tuning`` in ``toyworld_quality.py``) inverts each source clip and samples
its three edits twice: with the method's pooled ResNet GroupNorm statistics, and with per-frame statistics (the
image model's). With pooled statistics every frame is normalised by the video's standard deviation, not its
own. For each frame of each edit this records ``ratio``: the frame's own feature standard deviation over the
pooled one (sigma_f / sigma_pool, per group, averaged over the groups, over every pooled GroupNorm and over the
sampling steps; the conditional branch of classifier-free guidance), and whether the detector finds an object
in the sampled frame; and, per GroupNorm layer, the mean abs(ratio - 1), which says at which resolution the
frames part, and the mean abs(mu_f - mu_pool) / sigma_pool, the offset of a frame's group mean from the video's that
pooled statistics leave in the frame. A frame with a ratio below 1 has its features scaled down by the pooled statistics.
The ratio is also recorded in the per-frame run, where it does not act: there it says how far apart the frames'
statistics are by themselves, so the difference between the two is what the coupling adds.

Usage: ``python benchmarks/frame_norm_stats.py --clips 6`` (about 1 minute a clip on one CPU core;
``--model DIR`` measures another pipeline folder). Prints a markdown table; ``--out`` also writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toyworld_quality import make_clips, tuned_model
from tuneavideo.config import RunConfig
from tuneavideo.demo import TOY_MODEL
from tuneavideo.models.unet import FrameGroupNorm
from tuneavideo.toyworld import clip_caption, detect_video, render_clip, with_attributes
from tuneavideo.toyworld.metrics import fidelity, intact, off_majority, to_uint8_frames

#: Ratio bins of the summary table.
BINS = (0.0, 0.85, 1.15, float("inf"))


class RatioRecorder:
    """Forward hooks on every :class:`FrameGroupNorm`: sigma_f / sigma_pool of the last video in the batch; also,
    per layer (``layers``: name -> channels, resolution, and every call's mean abs(ratio - 1) and mean abs(mu_f -
    mu_pool) / sigma_pool, how far a frame's group mean sits from the video's), where it arises."""

    def __init__(self, unet, num_frames: int):
        self.num_frames, self.active, self.ratios, self.layers = num_frames, False, [], {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in unet.named_modules()
                        if isinstance(m, FrameGroupNorm)]

    def _hook(self, name: str):
        def record(module, inputs, output) -> None:
            if not self.active:
                return
            x = inputs[0].float()  # ((videos f), c, h, w)
            videos = x.shape[0] // self.num_frames
            grouped = x.reshape(videos, self.num_frames, module.num_groups, -1)
            own = grouped.std(dim=-1)  # (videos, f, groups)
            video = grouped.transpose(1, 2).reshape(videos, module.num_groups, -1)  # (videos, groups, f * values)
            pooled = video.std(dim=-1)[:, None]
            ratio = (own / pooled).mean(dim=-1)[-1].numpy()  # (f,) the last video: the conditional branch
            self.ratios.append(ratio)
            offset = (grouped.mean(dim=-1) - video.mean(dim=-1)[:, None]).abs() / pooled  # (videos, f, groups)
            layer = self.layers.setdefault(name, {"channels": x.shape[1], "resolution": x.shape[-1], "spread": [],
                                                  "offset": []})
            layer["spread"].append(float(np.mean(np.abs(ratio - 1))))
            layer["offset"].append(float(offset[-1].mean()))

        return record

    def take(self) -> np.ndarray:
        mean = np.mean(self.ratios, axis=0)
        self.ratios = []
        return mean


def frame_correlation(latents: torch.Tensor) -> float:
    """Mean correlation between two frames of a video's latents ``(1, c, f, h, w)``: each frame flattened and centred,
    the cosine of every pair of distinct frames, averaged (1: identical frames; 0: independent noise)."""
    frames = latents[0].transpose(0, 1).flatten(1).double()
    frames = frames - frames.mean(dim=1, keepdim=True)
    frames = frames / frames.norm(dim=1, keepdim=True)
    cosines = frames @ frames.T
    count = cosines.shape[0]
    return float((cosines.sum() - cosines.diagonal().sum()) / (count * (count - 1)))


def measure_clip(model: Path, clip, edits, steps: int, guidance: float) -> dict:
    source = render_clip(clip, size=64)
    frames = torch.from_numpy(source).permute(0, 3, 1, 2).float() / 255
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "frames"
        folder.mkdir()
        for i, frame in enumerate(source):
            Image.fromarray(frame).save(folder / f"{i:03d}.png")
        config = RunConfig()
        config.video.path, config.video.prompt = str(folder), clip_caption(clip)
        config.video.num_frames, config.video.width, config.video.height = clip.num_frames, 64, 64
        for norms in ("pooled", "per-frame"):
            tuned = tuned_model(model, config, frames, None)
            tuned.pipe.unet.pool_norm_over_frames = norms == "pooled"
            recorder = RatioRecorder(tuned.pipe.unet, clip.num_frames)  # new hooks on each run's new UNet
            latents = tuned.invert(steps, progress=False)
            result[f"inverted_{norms}"] = {"std": round(float(latents.std()), 4),
                                           "frame_correlation": round(frame_correlation(latents), 4)}
            rows = []
            for change in edits:
                recorder.active = True
                video = tuned.pipe([clip_caption(with_attributes(clip, **change))], clip.num_frames, 64, 64, steps,
                                   guidance, "", 0.0, None, latents)[0]
                recorder.active = False
                # recorded in both runs: with per-frame norms it is how far apart the frames' statistics are by
                # themselves (the sampler corrects every frame to its own), with pooled norms what the coupling adds
                ratio = recorder.take()
                frames_out = to_uint8_frames(video)
                detections = detect_video(frames_out)
                found = [d.shape is not None for d in detections]
                # dB against a clean render of the scene read in the frame: a texture can be read as an object
                fidelities = [None if (value := fidelity(frame, d)) is None else round(value, 2)
                              for frame, d in zip(frames_out, detections)]
                # the attributes in which each frame differs from its video's majority (what lowers consistency)
                off = [[] for _ in detections]
                for flip in off_majority(detections):
                    off[flip["frame"]].append(flip["attribute"])
                rows.append({"edit": change, "ratio": ratio.round(4).tolist(), "found": found, "off": off,
                             "fidelity": fidelities})
            result[norms] = rows
            result[f"layers_{norms}"] = {name: {"channels": layer["channels"], "resolution": layer["resolution"],
                                                "spread": round(float(np.mean(layer["spread"])), 4),
                                                "offset": round(float(np.mean(layer["offset"])), 4)}
                                         for name, layer in recorder.layers.items()}
    return result


def summarise(per_clip: list[dict]) -> dict:
    pooled = [(r, f) for clip in per_clip for row in clip["pooled"] for r, f in zip(row["ratio"], row["found"])]
    per_frame = [f for clip in per_clip for row in clip["per-frame"] for f in row["found"]]
    bins = []
    for lo, hi in zip(BINS, BINS[1:]):
        inside = [f for r, f in pooled if lo <= r < hi]
        bins.append({"ratio": [lo, hi], "frames": len(inside), "no_object": float(np.mean([not f for f in inside])) if inside else None})
    ratios = np.array([r for r, _ in pooled])
    # frames whose object's colour differs from their video's majority, and how far their own scale is from the pool's
    colour_off = [(r, "colour" in o) for clip in per_clip for row in clip["pooled"] for r, o in zip(row["ratio"], row["off"])]
    spread_of = lambda flag: [abs(r - 1) for r, off in colour_off if off == flag]  # noqa: E731
    return {
        "frames": len(pooled),
        "ratio_min": float(ratios.min()), "ratio_max": float(ratios.max()),
        "ratio_spread": float(np.mean(np.abs(ratios - 1))),
        "ratio_spread_per_frame_norms": float(np.mean([abs(r - 1) for clip in per_clip for row in clip["per-frame"]
                                                       for r in row["ratio"]])),
        # the DDIM-inverted source that sampling starts from (pooled norms): its std and how alike its frames are
        "inverted_std": float(np.mean([clip["inverted_pooled"]["std"] for clip in per_clip])),
        "inverted_frame_correlation": float(np.mean([clip["inverted_pooled"]["frame_correlation"] for clip in per_clip])),
        "no_object_pooled": float(np.mean([not f for _, f in pooled])),
        "no_object_per_frame": float(np.mean([not f for f in per_frame])),
        # frames that are not a clean drawing of one scene (metrics.intact): no object, or broken (runs that recorded it)
        **{f"not_intact_{key}": float(np.mean([not intact(v) for clip in per_clip for row in clip[norms]
                                               for v in row["fidelity"]]))
           for key, norms in (("pooled", "pooled"), ("per_frame", "per-frame"))
           if all("fidelity" in row for clip in per_clip for row in clip[norms])},
        "by_ratio": bins,
        "colour_off_pooled": float(np.mean([off for _, off in colour_off])),
        "colour_off_per_frame": float(np.mean([("colour" in o) for clip in per_clip for row in clip["per-frame"]
                                               for o in row["off"]])),
        "colour_off_frames": len(spread_of(True)),
        "ratio_spread_colour_off": float(np.mean(spread_of(True))) if spread_of(True) else None,
        "ratio_spread_colour_kept": float(np.mean(spread_of(False))) if spread_of(False) else None,
        # where the spread arises: each pooled GroupNorm's mean abs(ratio - 1) over the clips, in both runs
        "by_layer": {name: {"channels": layer["channels"], "resolution": layer["resolution"],
                            **{f"{key}{suffix}": float(np.mean([clip[f"layers_{norms}"][name][key]
                                                                for clip in per_clip]))
                               for key in ("spread", "offset")
                               for norms, suffix in (("pooled", ""), ("per-frame", "_per_frame_norms"))}}
                     for name, layer in per_clip[0]["layers_pooled"].items()},
    }


def by_resolution(by_layer: dict) -> dict:
    """The per-layer figures averaged over the ResNets' ``norm1`` and ``norm2`` layers of each resolution (largest
    first), and the per-frame run's spread over every layer."""
    rows = {}
    for resolution in sorted({layer["resolution"] for layer in by_layer.values()}, reverse=True):
        rows[resolution] = {}
        for kind in ("norm1", "norm2"):
            layers = [layer for name, layer in by_layer.items() if layer["resolution"] == resolution and name.endswith(kind)]
            rows[resolution][kind] = {key: float(np.mean([layer[key] for layer in layers]))
                                      for key in ("spread", "offset", "offset_per_frame_norms")} if layers else None
    rows["all"] = float(np.mean([layer["spread_per_frame_norms"] for layer in by_layer.values()]))
    return rows


def table(name: str, s: dict) -> str:
    cells = " | ".join(
        f"{b['no_object']:.2f} ({b['frames']})" if b["no_object"] is not None else "- (0)" for b in s["by_ratio"])
    return (f"| {name} | {s['ratio_min']:.2f} - {s['ratio_max']:.2f} | {s['ratio_spread']:.3f} | "
            f"{s['ratio_spread_per_frame_norms']:.3f} | {cells} | "
            f"{s['no_object_pooled']:.2f} | {s['no_object_per_frame']:.2f} | {s.get('not_intact_pooled', float('nan')):.2f} | "
            f"{s.get('not_intact_per_frame', float('nan')):.2f} | {s['inverted_std']:.2f} | "
            f"{s['inverted_frame_correlation']:.2f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="pipeline folder (repeatable; default the bundled toy model)")
    parser.add_argument("--clips", type=int, default=6, help="the first N clips of toyworld_quality.py's selection")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the clip selection (as toyworld_quality.py)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM inversion and sampling steps")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--out", help="also write the per-frame records and the summary here (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models = [Path(m) for m in (args.model or [str(TOY_MODEL)])]
    for model in models:
        if not (model / "model_index.json").is_file():
            print(f"error: {model} is not a diffusers pipeline folder (no model_index.json); pass --model DIR",
                  file=sys.stderr)
            return 2
    clips = make_clips(args.clips, 8, args.seed)
    report = {"settings": {k: v for k, v in vars(args).items() if k != "model"}, "models": {}}
    for model in models:
        per_clip = []
        for index, (clip, edits) in enumerate(clips):
            per_clip.append(measure_clip(model, clip, edits, args.steps, args.guidance))
            print(f"{model}: clip {index + 1}/{len(clips)} done", file=sys.stderr, flush=True)
        report["models"][str(model)] = {"summary": summarise(per_clip), "per_clip": per_clip}
    heads = " | ".join(f"no object, ratio {lo:g}-{hi:g}" if hi != float("inf") else f"no object, ratio >= {lo:g}"
                       for lo, hi in zip(BINS, BINS[1:]))
    print(f"| model | sigma_f / sigma_pool, min - max | mean abs(ratio - 1) | the same, sampled with per-frame norms "
          f"| {heads} | no object, pooled | "
          "no object, per-frame norms | not intact (no object or broken), pooled | the same, per-frame norms | "
          "inverted latents' std | their correlation between frames |")
    print("|---|---|---|---|" + "---|" * (len(BINS) - 1) + "---|---|---|---|---|---|")
    for model, data in report["models"].items():
        print(table("bundled toy-sd" if Path(model).resolve() == TOY_MODEL.resolve() else model, data["summary"]))
    print("\n| model | colour off the video's majority, pooled norms | per-frame norms | mean abs(ratio - 1) of those "
          "frames (pooled) | of the frames that keep it |")
    print("|---|---|---|---|---|")
    for model, data in report["models"].items():
        s = data["summary"]
        spread = lambda key: f"{s[key]:.3f}" if s[key] is not None else "-"  # noqa: E731
        print(f"| {'bundled toy-sd' if Path(model).resolve() == TOY_MODEL.resolve() else model} | "
              f"{s['colour_off_pooled']:.3f} ({s['colour_off_frames']} of {s['frames']}) | {s['colour_off_per_frame']:.3f} | "
              f"{spread('ratio_spread_colour_off')} | {spread('ratio_spread_colour_kept')} |")
    for model, data in report["models"].items():
        print(f"\n{model}: mean abs(ratio - 1) and mean abs(mu_f - mu_pool) / sigma_pool by GroupNorm layer (its "
              "input's channels and resolution)\n")
        print("| layer | channels | resolution | pooled norms | sampled with per-frame norms | mean offset, pooled | "
              "the same, per-frame norms |")
        print("|---|---|---|---|---|---|---|")
        for name, layer in data["summary"]["by_layer"].items():
            print(f"| {name} | {layer['channels']} | {layer['resolution']}x{layer['resolution']} | "
                  f"{layer['spread']:.3f} | {layer['spread_per_frame_norms']:.3f} | {layer['offset']:.3f} | "
                  f"{layer['offset_per_frame_norms']:.3f} |")
        rows = by_resolution(data["summary"]["by_layer"])
        print(f"\nby resolution (ResNet norm1 and norm2 layers; per-frame norms, every layer: {rows.pop('all'):.3f})\n")
        print("| resolution | spread norm1, norm2 | offset at norm1, pooled | the same, per-frame norms |")
        print("|---|---|---|---|")
        for resolution, row in rows.items():
            if row["norm1"] and row["norm2"]:
                print(f"| {resolution}x{resolution} | {row['norm1']['spread']:.3f}, {row['norm2']['spread']:.3f} | "
                      f"{row['norm1']['offset']:.3f} | {row['norm1']['offset_per_frame_norms']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
