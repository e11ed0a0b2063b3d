"""Where the bundled toy model reads the caption: cross-attention, or the pooled caption embedding (FiLM).

Stable Diffusion reads its prompt through cross-attention alone, which is what attention control (Prompt-to-Prompt,
FateZero) acts on. The toy model also adds an attention-pooled caption embedding to the timestep embedding, which
scales and shifts every ResNet block (``pooled_text_conditioning``). This measures how much of an edit each path
carries: the untuned inflated model (as ``no-tuning`` in ``toyworld_quality.py``, DDIM inversion) samples each edit of
the benchmark's clips three ways:

- ``plain``: the edit prompt everywhere (the method);
- ``pooled=source``: cross-attention reads the edit prompt, the pooled path the *source* prompt;
- ``pooled=edit``: both read the edit prompt, and so does the pooled path of guidance's unconditional branch.

An edit carried by cross-attention keeps its alignment under ``pooled=source``; one carried by the pooled path
loses it.

Usage: ``python benchmarks/text_paths.py --clips 4`` (about 1 minute a clip on one CPU core; ``--model DIR``
measures another pipeline folder; ``--seed 7`` the validation clips). Prints a markdown table; ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from toyworld_quality import clip_setup, make_clips, pipeline_folder, tuned_model
from tuneavideo.demo import TOY_MODEL, DemoSettings
from tuneavideo.toyworld import clip_caption, with_attributes
from tuneavideo.toyworld.metrics import score_edit

#: The ways each edit is sampled, in the order of the table.
MODES = ("plain", "pooled=source", "pooled=edit")


class PooledTextSwap:
    """A forward pre-hook on the UNet's pooled caption embedding (``add_embedding``) that gives it other text
    states ``(1, l, d)`` for every row of the batch; ``states = None`` leaves the input alone."""

    def __init__(self, unet):
        if getattr(unet, "add_embedding", None) is None:
            raise ValueError("this UNet has no pooled caption embedding (addition_embed_type 'text'); nothing to measure")
        self.states: torch.Tensor | None = None
        unet.add_embedding.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if self.states is None:
            return None
        (hidden,) = args  # ((b f), l, d)
        return (self.states.to(hidden.dtype).expand(hidden.shape[0], -1, -1),)


def measure_clip(model: Path, clip, edits, settings: DemoSettings) -> list[dict]:
    source, frames, config = clip_setup(clip, settings)
    tuned = tuned_model(model, config, frames, None)
    swap = PooledTextSwap(tuned.pipe.unet)
    attributes = {"shape": clip.shape, "colour": clip.colour, "background": clip.background}
    source_states = tuned.pipe.encode_prompt([clip_caption(clip)])
    rows = []
    for change in edits:
        prompt = clip_caption(with_attributes(clip, **change))
        for mode in MODES:
            swap.states = {"plain": None, "pooled=source": source_states,
                           "pooled=edit": tuned.pipe.encode_prompt([prompt])}[mode]
            video = tuned.sample(prompt, config.sample, progress=False)
            swap.states = None
            scored = score_edit(source, video, change, attributes).as_dict()
            rows.append({"edit": change, "mode": mode, **{k: scored[k] for k in ("alignment", "preservation", "motion_error")}})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(TOY_MODEL), help="pipeline folder (default the bundled toy model)")
    parser.add_argument("--clips", type=int, default=4, help="the first N clips of toyworld_quality.py's selection")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the clip selection (as toyworld_quality.py)")
    parser.add_argument("--out", help="also write the per-edit records and the summary here (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = pipeline_folder(args.model)
    if model is None:
        return 2
    from diffusers import UNet2DConditionModel

    if UNet2DConditionModel.load_config(model / "unet").get("addition_embed_type") != "text":
        print(f"error: {model}'s UNet has no pooled caption embedding (addition_embed_type 'text'): it reads the caption "
              "through cross-attention alone, and there is nothing to measure", file=sys.stderr)
        return 2
    settings = DemoSettings()
    rows = []
    for index, (clip, edits) in enumerate(make_clips(args.clips, settings.num_frames, args.seed)):
        rows += measure_clip(model, clip, edits, settings)
        print(f"clip {index + 1}/{args.clips} done", file=sys.stderr, flush=True)
    summary = {}
    for kind in ("colour", "shape", "background"):
        for mode in MODES:
            picked = [r for r in rows if kind in r["edit"] and r["mode"] == mode]
            summary[f"{kind} {mode}"] = {k: float(np.mean([r[k] for r in picked])) for k in
                                         ("alignment", "preservation", "motion_error")}
    labels = {"plain": "as the prompts (the method)", "pooled=source": "the source prompt, every row",
              "pooled=edit": "the edit prompt, every row"}
    print("| edit | pooled caption embedding | alignment | preservation | motion error (px) |")
    print("|---|---|---|---|---|")
    for name, values in summary.items():
        kind, mode = name.split(" ")
        print(f"| {kind} | {labels[mode]} | {values['alignment']:.2f} | {values['preservation']:.2f} | "
              f"{values['motion_error']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": vars(args), "summary": summary, "edits": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
