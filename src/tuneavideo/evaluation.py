"""``tuneavideo eval``: the paper's metrics over run folders (a batch folder, or runs), as CSV, Markdown and one HTML page.

Per edit (each ``RUN_DIR/edits/STEM.json`` with its ``STEM.mp4``), with a CLIP model (transformers ``CLIPModel``):

- **frame consistency**: the mean cosine similarity of the CLIP image embeddings of consecutive frames, x 100.
  The paper's text says "all pairs of video frames"; consecutive pairs are what the issue asked for and what the
  text-guided video editing benchmarks compute (for a smooth video the two are close, all pairs a little lower).
- **textual alignment**: the mean CLIP score of the frames and the edit prompt: the cosine of each frame's image
  embedding with the prompt's text embedding, x 100 (plain cosine x 100, as the paper's table reports it; not
  Hessel et al.'s 2.5 x max(cos, 0)).

Both read the edit's MP4 as written (the video a viewer sees). Beside them: the seconds and peak memory that tuning
(``tune.json``) and the edit (its JSON) recorded, and, for runs on the toy world (the source prompt is a toy-world
caption, :func:`tuneavideo.toyworld.parse_caption`), the detector's metrics (:mod:`tuneavideo.toyworld.metrics`).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import ConfigError
from .runfolder import ADAPTER, CONFIG, EDITS, SOURCE, TUNE_RECORD, atomic_text, first_line

EVAL_CSV, EVAL_MD, EVAL_HTML = "eval.csv", "eval.md", "eval.html"
TOY_COLUMNS = ("toy_alignment", "toy_preservation", "toy_motion_error", "toy_consistency")
COLUMNS = ("run", "prompt", "frame_consistency", "textual_alignment", "edit_seconds", "edit_peak_memory_mib",
           "tune_seconds", "tune_peak_memory_mib", "memory") + TOY_COLUMNS
CLIP_HINT = ("pass --clip with a hub id whose weights this machine has or can download (e.g. "
             "openai/clip-vit-large-patch14) or a folder holding a CLIPModel and its processor (save_pretrained)")


def find_runs(paths: list[str | Path]) -> list[Path]:
    """The finished run folders among ``paths`` and their sub-folders (a batch folder holds one per job)."""
    runs = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ConfigError(f"{path} is not a folder; give a batch folder or run folders")
        found = [path] if (path / CONFIG).is_file() else sorted(p for p in path.iterdir() if (p / CONFIG).is_file())
        runs += [run for run in found if (run / ADAPTER).is_file()]
    if not runs:
        raise ConfigError(f"no tuned run folder ({CONFIG} and {ADAPTER}) in {', '.join(map(str, paths))}; "
                          "give the --output of 'tuneavideo batch' or of 'tuneavideo tune'")
    return runs


@dataclass
class ClipScorer:
    """A CLIP model and its processor: image and text embeddings, L2-normalised."""

    model: torch.nn.Module
    processor: object
    device: torch.device

    @classmethod
    def load(cls, name: str | None, device: str | torch.device | None = None) -> ClipScorer:
        """``CLIPModel`` and ``CLIPProcessor`` from a folder or a hub id: from the local cache first
        (``local_files_only``), from the hub only when that fails and the network is allowed."""
        from transformers import CLIPModel, CLIPProcessor

        from .tuning import resolve_device

        if not name:
            raise ConfigError(f"eval needs a CLIP model; {CLIP_HINT}")
        device = resolve_device(device)
        errors = []
        for local in (True, False) if not Path(name).exists() and not os.environ.get("HF_HUB_OFFLINE") else (True,):
            try:
                model = CLIPModel.from_pretrained(name, local_files_only=local)
                processor = CLIPProcessor.from_pretrained(name, local_files_only=local)
                return cls(model.to(device).eval(), processor, device)
            except (OSError, ValueError) as error:
                errors.append(first_line(error))
        raise ConfigError(f"cannot load the CLIP model {name!r} ({errors[-1]}); {CLIP_HINT}")

    @torch.no_grad()
    def images(self, frames: torch.Tensor) -> torch.Tensor:
        """``(f, 3, h, w)`` in [0, 1] -> ``(f, d)`` unit image embeddings."""
        from .toyworld.metrics import to_uint8_frames

        inputs = self.processor(images=list(to_uint8_frames(frames)), return_tensors="pt")
        features = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
        features = features if torch.is_tensor(features) else features.pooler_output  # transformers 5: an output
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def text(self, prompt: str) -> torch.Tensor:
        """``(d,)`` unit text embedding of ``prompt``."""
        inputs = self.processor(text=[prompt], padding=True, truncation=True, return_tensors="pt")
        features = self.model.get_text_features(input_ids=inputs["input_ids"].to(self.device),
                                                attention_mask=inputs["attention_mask"].to(self.device))
        features = features if torch.is_tensor(features) else features.pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)[0]


def clip_metrics(scorer: ClipScorer, frames: torch.Tensor, prompt: str) -> tuple[float, float]:
    """(frame consistency, textual alignment) of a video ``(f, 3, h, w)`` and its prompt, each 100 x a mean cosine."""
    images = scorer.images(frames)  # (f, d), unit rows
    consistency = (images[1:] * images[:-1]).sum(-1).mean().item() if len(images) > 1 else 1.0
    alignment = (images @ scorer.text(prompt)).mean().item()
    return 100 * consistency, 100 * alignment


@dataclass
class EditRow:
    run: str
    prompt: str
    video: Path
    values: dict = field(default_factory=dict)


def evaluate(paths: list[str | Path], clip: str | None, output: str | Path | None = None,
             device: str | None = None, log=print) -> list[EditRow]:
    """Score every edit of the run folders in ``paths`` and write ``eval.csv``, ``eval.md`` and ``eval.html`` into
    ``output`` (default: the one folder given). Returns the rows, the last one the mean over edits."""
    from .toyworld import parse_caption
    from .video import read_video

    runs = find_runs(paths)
    if output is None:
        if len(paths) != 1:
            raise ConfigError("several folders given; pass --output for the table")
        output = paths[0]
    output = Path(output)
    scorer = ClipScorer.load(clip, device)  # after the cheap checks: a wrong folder fails before a model loads
    rows = []
    for run in runs:
        tuned = _read_json(run / TUNE_RECORD)
        source_prompt = _source_prompt(run)
        toy_source = parse_caption(source_prompt) if source_prompt else None
        for record_path in sorted((run / EDITS).glob("*.json")):
            record = _read_json(record_path)
            video_path = record_path.with_suffix(".mp4")
            if "prompt" not in record or not video_path.is_file():
                continue  # the side-by-side's record, or an edit without its video
            frames = read_video(video_path, num_frames=record["num_frames"], width=record["width"], height=record["height"])
            consistency, alignment = clip_metrics(scorer, frames, record["prompt"])
            values = {"frame_consistency": consistency, "textual_alignment": alignment,
                      "edit_seconds": record.get("seconds"), "edit_peak_memory_mib": record.get("peak_memory_mib"),
                      "tune_seconds": tuned.get("seconds"), "tune_peak_memory_mib": tuned.get("peak_memory_mib"),
                      "memory": record.get("memory") or tuned.get("memory")}
            target = parse_caption(record["prompt"])
            if toy_source and target and (run / SOURCE).is_file():
                values.update(_toy_scores(run, frames, toy_source, target))
            rows.append(EditRow(run.name, record["prompt"], video_path, values))
            log(f"{run.name}: '{record['prompt']}': frame consistency {consistency:.2f}, textual alignment {alignment:.2f}")
    if not rows:
        raise ConfigError(f"the run folders hold no edits ({EDITS}/*.json and .mp4); edit them first")
    rows.append(EditRow("mean", f"{len(rows)} edits", Path(), _means(rows)))
    output.mkdir(parents=True, exist_ok=True)
    atomic_text(output / EVAL_CSV, _csv(rows))
    atomic_text(output / EVAL_MD, _markdown(rows))
    atomic_text(output / EVAL_HTML, _html(rows, runs, output))
    return rows


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _source_prompt(run: Path) -> str:
    from .config import RunConfig

    return RunConfig.load(run / CONFIG).video.prompt


def _toy_scores(run: Path, frames: torch.Tensor, source: dict, target: dict) -> dict:
    """The toy-world detector's scores of an edit against the run's source clip (:func:`score_edit`)."""
    from .toyworld.metrics import ATTRIBUTES, score_edit
    from .video import read_video

    source_frames = read_video(run / SOURCE, num_frames=frames.shape[0], width=frames.shape[3], height=frames.shape[2])
    changes = {name: target[name] for name in ATTRIBUTES if target[name] != source[name]}
    score = score_edit(source_frames, frames, changes, {name: source[name] for name in ATTRIBUTES})
    return {"toy_alignment": score.alignment, "toy_preservation": score.preservation,
            "toy_motion_error": score.motion_error, "toy_consistency": score.consistency}


def _means(rows: list[EditRow]) -> dict:
    means = {}
    for column in COLUMNS[2:]:
        numbers = [r.values[column] for r in rows if isinstance(r.values.get(column), (int, float))
                   and math.isfinite(r.values[column])]
        if numbers and column != "memory":
            means[column] = sum(numbers) / len(numbers)
    return means


def _cell(value, digits: int) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _table(rows: list[EditRow], digits: int = 4) -> list[list[str]]:
    return [[r.run, r.prompt] + [_cell(r.values.get(c), digits) for c in COLUMNS[2:]] for r in rows]


def _csv(rows: list[EditRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(_table(rows, digits=8))  # for further computation; the page and Markdown round to 4
    return buffer.getvalue()


def _markdown(rows: list[EditRow]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in _table(rows)]
    note = ("\nframe_consistency: 100 x mean cosine of the CLIP image embeddings of consecutive frames; "
            "textual_alignment: 100 x mean cosine of each frame's CLIP image embedding with the edit prompt's text "
            "embedding. Seconds and peak memory (MiB; memory says what was measured) as the run folders recorded them.\n")
    return "\n".join(lines) + "\n" + note


def _html(rows: list[EditRow], runs: list[Path], output: Path) -> str:
    def video(path: Path) -> str:
        src = html.escape(Path(os.path.relpath(path, output)).as_posix())
        return f"<video src='{src}' autoplay loop muted playsinline width=192></video>"

    sections = []
    for run in runs:
        edits = [r for r in rows if r.run == run.name and r.video != Path()]
        cells = [f"<figure>{video(run / SOURCE)}<figcaption>source: {html.escape(_source_prompt(run))}</figcaption></figure>"]
        for r in edits:
            scores = (f"consistency {r.values['frame_consistency']:.2f}, alignment {r.values['textual_alignment']:.2f}")
            cells.append(f"<figure>{video(r.video)}<figcaption>{html.escape(r.prompt)}<br>{scores}</figcaption></figure>")
        sections.append(f"<h2>{html.escape(run.name)}</h2><div class=row>{''.join(cells)}</div>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in _table(rows))
    return ("<!doctype html><meta charset=utf-8><title>tuneavideo eval</title>"
            "<style>.row{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;width:192px;font:12px sans-serif}"
            "table{border-collapse:collapse;font:12px sans-serif}td,th{border:1px solid #ccc;padding:2px 4px}</style>"
            f"<h1>Edits, side by side</h1>{''.join(sections)}<h1>Metrics</h1><table><tr>{head}</tr>{body}</table>"
            "<p>frame_consistency and textual_alignment: 100 x mean cosine of CLIP embeddings (consecutive frames; "
            "frames and the edit prompt).</p>")
