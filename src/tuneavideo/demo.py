"""``tuneavideo demo``: the whole method on the bundled toy model, offline, in minutes on a CPU.

Renders a toy-world clip (a red circle moving right on blue sky), tunes the bundled model on it,
inverts it, edits it three ways (object colour, object shape, background), and writes the videos,
a grid and a report with the detector's metrics into one folder.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .config import ConfigError, RunConfig
from .editing import edit, load_run
from .loading import load_base
from .runfolder import EDITS as EDITS_FOLDER
from .runfolder import atomic_text, atomic_write, slug
from .toyworld import Clip, clip_caption, render_clip, with_attributes
from .toyworld.metrics import score_edit, to_uint8_frames
from .tuning import resolve_device, tune

TOY_MODEL = Path(__file__).resolve().parent / "assets" / "toy-sd"


@dataclass(frozen=True)
class DemoSettings:
    num_frames: int = 8
    size: int = 64
    train_steps: int = 150
    learning_rate: float = 1e-4
    steps: int = 25  # DDIM inversion and sampling steps
    guidance_scale: float = 7.5
    seed: int = 33


# Neither the source nor its edits is a caption combination held out of the toy model's pretraining.
SOURCE = Clip(shape="circle", colour="red", size="large", background="blue sky", path="right", num_frames=8)
EDITS = ({"colour": "green"}, {"shape": "square"}, {"background": "white snow"})


def _fresh_folder(output: str | Path | None) -> Path:
    """The output folder; never one that holds earlier results (a numbered sibling instead)."""
    base = Path(output) if output else Path("tuneavideo-demo")
    folder, n = base, 2
    while folder.exists() and any(folder.iterdir()):
        folder, n = base.with_name(f"{base.name}-{n}"), n + 1
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_demo(
    output: str | Path | None = None,
    *,
    train_steps: int | None = None,
    steps: int | None = None,
    settings: DemoSettings = DemoSettings(),
    device: str | None = None,
    model: str | Path | None = None,
    progress: bool = True,
    log=print,
) -> Path:
    """Run the demo and return the folder it wrote.

    ``model``: a toy-sd pipeline folder (one written by ``python -m tuneavideo.toymodel.pretrain``) to run the demo
    on instead of the bundled model, so that a candidate model's demo figures come from the same code.
    """
    if model is None:
        model = TOY_MODEL
        if not (model / "model_index.json").is_file():
            raise FileNotFoundError(f"the bundled toy model is missing from {TOY_MODEL}; reinstall the package")
    elif not (Path(model) / "model_index.json").is_file():
        raise ConfigError(f"demo --model {model}: not a pipeline folder (no model_index.json); give a folder written by "
                          "python -m tuneavideo.toymodel.pretrain, or leave --model out for the bundled model")
    model = Path(model).resolve()
    train_steps = settings.train_steps if train_steps is None else train_steps
    steps = settings.steps if steps is None else steps
    for name, value in (("train_steps", train_steps), ("steps", steps)):
        if value < 1:
            raise ConfigError(f"demo {name} {value}: give at least 1 step, or leave it out for the demo's default")
    base = load_base(model)  # before any output: a model that does not load leaves no folder behind
    folder = _fresh_folder(output)
    began = time.perf_counter()
    threads = torch.get_num_threads()
    if resolve_device(device).type == "cpu":
        # The toy model is small: one thread is as fast, and two threads on a busy machine spin-wait
        # (steps measured 10x slower beside another process).
        torch.set_num_threads(1)
    try:
        return _run(folder, began, model, base, train_steps, steps, settings, device, progress, log)
    finally:
        torch.set_num_threads(threads)


def _run(folder, began, model, base, train_steps, steps, settings, device, progress, log) -> Path:
    clip = Clip(**{**SOURCE.__dict__, "num_frames": settings.num_frames})
    frames_dir = folder / "source-frames"
    frames_dir.mkdir()
    source = render_clip(clip, size=settings.size)  # (f, h, w, 3) uint8
    for index, frame in enumerate(source):
        Image.fromarray(frame).save(frames_dir / f"frame-{index:03d}.png")
    prompt = clip_caption(clip)
    log(f"source: {prompt} ({settings.num_frames} frames, {settings.size}x{settings.size})")

    config = RunConfig()
    config.video.path, config.video.prompt = str(frames_dir), prompt
    config.video.num_frames, config.video.width, config.video.height = settings.num_frames, settings.size, settings.size
    config.tune.base_model = str(model)
    config.tune.steps, config.tune.learning_rate, config.tune.seed = train_steps, settings.learning_rate, settings.seed
    config.tune.gradient_checkpointing, config.tune.checkpoint_every = False, 0
    config.sample.num_inference_steps = config.sample.num_inversion_steps = steps
    config.sample.guidance_scale, config.sample.seed = settings.guidance_scale, settings.seed
    run_dir = folder / "run"
    tune(base, config, run_dir, device=device, progress=progress, log=log)  # leaves base unchanged: it serves the edits

    tuned = load_run(run_dir, base_model=base, device=device)
    targets = [with_attributes(clip, **change) for change in EDITS]
    prompts = [clip_caption(target) for target in targets]
    result = edit(tuned, prompts, output_dir=folder / EDITS_FOLDER, progress=progress)

    source_attributes = {"shape": clip.shape, "colour": clip.colour, "background": clip.background}
    rows, scores = [("source: " + prompt, source)], []
    for change, edit_prompt, video in zip(EDITS, prompts, result.videos):
        score = score_edit(source, video, change, source_attributes)
        # a video with no object in any frame has no found-frame motion error: null in the JSON, not NaN
        values = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in score.as_dict().items()}
        scores.append({"prompt": edit_prompt, "edit": change, **values})
        rows.append((edit_prompt, to_uint8_frames(video)))
    write_grid(folder / "grid.png", rows)
    seconds = time.perf_counter() - began
    report = {"source_prompt": prompt, "model": "bundled toy-sd" if model == TOY_MODEL.resolve() else str(model),
              "settings": settings.__dict__ | {"train_steps": train_steps, "steps": steps},
              "seconds": round(seconds, 1), "edits": scores, "files": [str(p.relative_to(folder)) for p in result.files]}
    atomic_text(folder / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_text(folder / "report.html", _html(report))
    log(f"done in {seconds:.0f} s")
    return folder


def write_grid(path: Path, rows: list[tuple[str, np.ndarray]], scale: int = 2) -> None:
    """One row per video (its frames left to right), its prompt above it."""
    frames, height, width, _ = rows[0][1].shape
    label = 14
    grid = Image.new("RGB", (frames * width * scale, len(rows) * (height * scale + label)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (text, video) in enumerate(rows):
        top = r * (height * scale + label)
        draw.text((2, top + 1), text, fill="black")
        for i, frame in enumerate(video):
            tile = Image.fromarray(frame).resize((width * scale, height * scale), Image.NEAREST)
            grid.paste(tile, (i * width * scale, top + label))
    atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))


def _html(report: dict) -> str:
    rows = []
    for s in report["edits"]:
        gif = html.escape(f"{EDITS_FOLDER}/{slug(s['prompt'])}.gif")
        rows.append(
            f"<tr><td>{html.escape(s['prompt'])}</td><td><img src='{gif}' width=128></td>"
            f"<td>{s['alignment']:.2f}</td><td>{s['preservation']:.2f}</td><td>{s['motion_error']:.2f}</td>"
            f"<td>{s['consistency']:.2f}</td><td>{s['intact']:.2f}</td></tr>"
        )
    return (
        "<!doctype html><meta charset=utf-8><title>tuneavideo demo</title>"
        f"<h1>Tune-A-Video on the toy world</h1><p>Model: {html.escape(report['model'])}</p>"
        f"<p>Source: {html.escape(report['source_prompt'])} "
        f"<video src='{EDITS_FOLDER}/side-by-side.mp4' autoplay loop muted></video></p><p><img src='grid.png'></p>"
        "<table border=1 cellpadding=4><tr><th>edit prompt</th><th>video</th><th>alignment</th>"
        "<th>preservation</th><th>motion error (px)</th><th>consistency</th><th>intact frames</th></tr>"
        + "".join(rows)
        + f"</table><p>{report['seconds']} s in all. Metrics: toy-world detector; see tuneavideo.toyworld.metrics.</p>"
    )
