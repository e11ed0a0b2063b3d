"""``tuneavideo ui``: a web page (Gradio) to tune runs and edit them, served from one runs folder.

The page calls the same :func:`~tuneavideo.tuning.tune`, :func:`~tuneavideo.editing.load_run` and
:func:`~tuneavideo.editing.edit` as the command line; what it adds is a queue (one job on the device at a time,
the others wait their turn) and the page. Its state lives in the runs folder, not in the browser, so a reload,
a second tab or a restarted server sees the same runs::

    RUNS/NAME/            a run folder (tuneavideo.runfolder), written by tune, edits in RUNS/NAME/edits/
    RUNS/.uploads/NAME/   the uploaded video run NAME was tuned on (kept: a cancelled run resumes from it)
    RUNS/.examples/NAME/  a toy-world example clip, rendered on first use (PNG frames, and NAME.mp4 to look at)
    RUNS/.gradio/         Gradio's uploads and the copies of the files it shows

A restarted server resumes nothing by itself: an interrupted run is listed with its step, and resumed only
when asked from the Runs tab. The page reads and writes only the runs folder; base models are chosen from the
list the server was started with (the bundled toy model, then each ``--base-model``), never typed in.
"""

from __future__ import annotations

import copy
import html
import itertools
import json
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import CONTROL_MODES, INVERSION_METHODS, RESIZE_MODES, ConfigError, RunConfig, SampleConfig
from .errors import TuneAVideoError
from .runfolder import ADAPTER, CONFIG, EDITS, LOG, SOURCE, checkpoint_step, latest_checkpoint, slug

UPLOADS, EXAMPLES, GRADIO = ".uploads", ".examples", ".gradio"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TOY_LABEL = "toy model (bundled)"
MAX_PROMPTS = 4  # edit prompts per job: one result column each
MAX_UPLOAD = "200mb"


def _toy_model() -> str:
    from .demo import TOY_MODEL

    return str(TOY_MODEL)


# --------------------------------------------------------------------------------------------------------- jobs


@dataclass(eq=False)
class Job:
    """One unit of device work: tuning (or resuming) a run, or editing one. ``work(job)`` runs it and may report
    progress through ``step``, ``total``, ``losses`` and ``phase``; ``stop`` asks a tuning job to end early."""

    kind: str  # "tune" | "edit"
    run: str
    work: Callable[[Job], object]
    id: int = 0
    state: str = "waiting"  # waiting | running | done | failed | cancelled
    phase: str = ""
    step: int = 0
    total: int = 0
    losses: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    began: float = 0.0
    error: str = ""
    result: object = None
    stop: threading.Event = field(default_factory=threading.Event)
    discard: Callable[[], None] | None = None  # undoes what submitting did, when the job is cancelled before it runs

    def seconds_left(self) -> float | None:
        """The steps left at the mean time of the last steps (at most 20), or None before the first step."""
        recent = self.step_seconds[-20:]
        if not recent or self.total <= self.step:
            return None
        return sum(recent) / len(recent) * (self.total - self.step)


class JobQueue:
    """Runs jobs one at a time, in the order they came, on one worker thread."""

    def __init__(self, keep: int = 20):
        self._lock = threading.Condition()
        self._waiting: list[Job] = []
        self._running: Job | None = None
        self._finished: list[Job] = []  # the last ``keep``, newest last
        self._keep = keep
        self._ids = itertools.count(1)
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="tuneavideo-jobs", daemon=True)
        self._worker.start()

    def submit(self, job: Job) -> Job:
        with self._lock:
            job.id = next(self._ids)
            self._waiting.append(job)
            self._lock.notify_all()
        return job

    def position(self, job: Job) -> int | None:
        """0 while ``job`` runs, 1 for the next to run, ...; None once it has ended."""
        with self._lock:
            if job is self._running:
                return 0
            return self._waiting.index(job) + 1 if job in self._waiting else None

    def cancel(self, job: Job) -> bool:
        """Take a waiting job out of the queue, or ask a running tuning job to stop after its current step (it keeps
        a checkpoint). An edit that runs goes on to its end. Returns whether anything was cancelled."""
        with self._lock:
            if job in self._waiting:
                self._waiting.remove(job)
                job.state = "cancelled"
                self._remember(job)
                if job.discard is not None:
                    job.discard()
                return True
            if job is self._running and job.kind == "tune":
                job.stop.set()
                job.phase = "stopping after this step"
                return True
        return False

    def get(self, job_id: int | None) -> Job | None:
        with self._lock:
            for job in [self._running, *self._waiting, *self._finished]:
                if job is not None and job.id == job_id:
                    return job
        return None

    def snapshot(self) -> tuple[Job | None, list[Job], list[Job]]:
        """The running job, the waiting ones in order, the finished ones newest first."""
        with self._lock:
            return self._running, list(self._waiting), self._finished[::-1]

    def busy_runs(self) -> set[str]:
        """Names of runs that a waiting or running job will write."""
        running, waiting, _ = self.snapshot()
        return {job.run for job in ([running] if running else []) + waiting}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for job in self._waiting:
                job.state = "cancelled"
            self._waiting.clear()
            if self._running is not None:
                self._running.stop.set()
            self._lock.notify_all()
        self._worker.join(timeout=60)

    def _remember(self, job: Job) -> None:
        self._finished = (self._finished + [job])[-self._keep:]

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job = self._running = self._waiting.pop(0)
                job.state, job.began = "running", time.time()
            try:
                job.result = job.work(job)
                job.state = "cancelled" if job.stop.is_set() and job.kind == "tune" and job.step < job.total else "done"
            except Exception as error:  # shown on the page as one line; the traceback of a bug goes to the server's log
                job.state, job.error = "failed", _message(error)
            with self._lock:
                self._running = None
                self._remember(job)


def _message(error: BaseException) -> str:
    """The one line the page shows for ``error``: the message of an error the user can fix, else its kind."""
    if isinstance(error, TuneAVideoError):
        return str(error).strip()
    if isinstance(error, OSError):
        return f"cannot write or read {Path(error.filename).name if error.filename else 'a file'}: {error.strerror or error}"
    traceback.print_exception(error, file=sys.stderr)
    return f"internal error ({type(error).__name__}); the server's log has the details"


# --------------------------------------------------------------------------------------------------------- runs


@dataclass
class RunInfo:
    """A run folder as the page lists it."""

    name: str
    path: Path
    config: RunConfig | None
    state: str  # finished | interrupted | incomplete | damaged
    step: int = 0  # of an interrupted run: the step of its checkpoint

    @property
    def steps(self) -> int:
        return self.config.tune.steps if self.config else 0


def list_runs(runs_dir: Path) -> list[RunInfo]:
    """The run folders in ``runs_dir`` (those holding a config), newest first."""
    found = []
    folders = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")] if runs_dir.is_dir() else []
    for path in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True):
        if not (path / CONFIG).is_file():
            continue
        try:
            config = RunConfig.load(path / CONFIG, log=lambda message: None)
        except TuneAVideoError:
            found.append(RunInfo(path.name, path, None, "damaged"))
            continue
        checkpoint = latest_checkpoint(path)
        if (path / ADAPTER).is_file():
            found.append(RunInfo(path.name, path, config, "finished", config.tune.steps))
        elif checkpoint is not None:
            found.append(RunInfo(path.name, path, config, "interrupted", checkpoint_step(checkpoint)))
        else:
            found.append(RunInfo(path.name, path, config, "incomplete"))
    return found


def logged_losses(run_dir: Path, up_to: int | None = None) -> list[float]:
    """The losses of ``train.log`` (one per step, the last line of a step that was logged twice), to ``up_to``."""
    losses: dict[int, float] = {}
    path = run_dir / LOG
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
            losses[int(entry["step"])] = float(entry["loss"])
        except (ValueError, TypeError, KeyError):
            continue
    return [losses[s] for s in sorted(losses) if up_to is None or s <= up_to]


# ----------------------------------------------------------------------------------------------- example clips


def example_clips() -> dict[str, object]:
    """The toy-world example clips, by their captions (none a combination held out of the toy model's training)."""
    from .demo import SOURCE
    from .toyworld import Clip, clip_caption

    clips = (SOURCE, Clip(shape="square", colour="yellow", size="large", background="green grass", path="up", num_frames=8),
             Clip(shape="triangle", colour="purple", size="large", background="white snow", path="left", num_frames=8))
    return {clip_caption(clip): clip for clip in clips}


def render_example(runs_dir: Path, caption: str, size: int = 64) -> tuple[Path, Path]:
    """The frames folder and a preview MP4 of the example clip ``caption``, rendered once into ``RUNS/.examples``."""
    import numpy as np
    from PIL import Image

    from .runfolder import atomic_write
    from .toyworld import render_clip
    from .video import write_video

    clip = example_clips()[caption]
    folder = runs_dir / EXAMPLES / slug(caption)
    preview = folder.with_suffix(".mp4")
    if not (folder.is_dir() and preview.is_file()):
        frames = render_clip(clip, size=size)  # (f, h, w, 3) uint8
        folder.mkdir(parents=True, exist_ok=True)
        for index, frame in enumerate(frames):
            atomic_write(folder / f"frame-{index:03d}.png", lambda tmp, frame=frame: Image.fromarray(frame).save(tmp, format="PNG"))
        write_video(preview, np.ascontiguousarray(frames.transpose(0, 3, 1, 2)).astype(np.float32) / 255, fps=8)
    return folder, preview


# ------------------------------------------------------------------------------------------------------- server


class Studio:
    """What the page works on: the runs folder, the base models it may use, the device and the job queue."""

    def __init__(self, runs_dir: str | Path, base_models: list[str] | tuple[str, ...] = (), device: str | None = None):
        self.runs_dir = Path(runs_dir).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.bases = {TOY_LABEL: _toy_model()}  # label on the page -> what load_base is given
        for model in base_models:
            local = Path(model).expanduser()
            self.bases[model] = str(local.resolve()) if local.exists() else model  # a hub id stays as written
        self.device = device
        self.jobs = JobQueue()
        self._base_cache: tuple[str, object] | None = None  # one loaded base at a time: a GPU holds one SD well
        self._naming = threading.Lock()  # two pages starting runs at once get two names

    # ---------------------------------------------------------------------------------------------- the bases

    def base_label(self, base_model: str) -> str | None:
        """The page's label of a base a run was tuned on, or None when this server was not started with it."""
        return next((label for label, model in self.bases.items() if model == base_model), None)

    def load_base(self, model: str):
        """The loaded base ``model``, kept for the next job (the worker thread alone calls this)."""
        from .loading import load_base

        if self._base_cache is None or self._base_cache[0] != model:
            self._base_cache = None  # the old one goes before the new one loads
            self._base_cache = (model, load_base(model))
        return self._base_cache[1]

    # ---------------------------------------------------------------------------------------------- tuning

    def _new_run_name(self, wanted: str, prompt: str) -> str:
        """A folder name for a new run: ``wanted`` (made file-name safe) or the prompt's, numbered when taken."""
        stem = slug(wanted or prompt, limit=40)
        name, n = stem, 2
        taken = self.jobs.busy_runs()
        while (self.runs_dir / name).exists() or (self.runs_dir / UPLOADS / name).exists() or name in taken:
            if wanted:
                raise ConfigError(f"a run named {name!r} exists already; pick another name")
            name, n = f"{stem}-{n}", n + 1
        return name

    def submit_tune(self, config: RunConfig, name: str, upload: Path | None) -> Job:
        """Queue tuning a new run named ``name`` (made file-name safe; empty: after the prompt, numbered when taken) on
        ``upload``, copied into ``RUNS/.uploads``, or on ``config.video.path``. The caller has checked the config
        and the video."""
        config = copy.deepcopy(config)
        with self._naming:
            name = self._new_run_name(name, config.video.prompt)
            kept = self.runs_dir / UPLOADS / name
            if upload is not None:
                kept.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(upload, kept / upload.name)
                config.video.path = str(kept / upload.name)
            job = Job("tune", name, lambda job: self._tune(job, config, resume=False), total=config.tune.steps,
                      discard=lambda: shutil.rmtree(kept, ignore_errors=True))
            return self.jobs.submit(job)

    def submit_resume(self, run: RunInfo, steps: int) -> Job:
        """Queue resuming the interrupted ``run`` from its checkpoint, to ``steps`` steps in all."""
        config = replace(run.config, tune=replace(run.config.tune, steps=steps))
        config.validate()
        if steps <= run.step:
            raise ConfigError(f"run {run.name} has done {run.step} steps; give more than that to resume it")
        job = Job("tune", run.name, lambda job: self._tune(job, config, resume=True), total=steps, step=run.step,
                  losses=logged_losses(run.path, run.step))
        return self.jobs.submit(job)

    def _tune(self, job: Job, config: RunConfig, resume: bool) -> object:
        from .tuning import tune

        run_dir = self.runs_dir / job.run
        job.phase = "loading the base model"
        base = self.load_base(config.tune.base_model)

        def on_step(step: int, loss: float, seconds: float) -> None:
            job.phase = "tuning" if step < job.total else "inverting the source and saving"
            job.step = step
            job.losses.append(loss)
            job.step_seconds.append(seconds)

        job.phase = "reading the video"
        try:
            return tune(base, config, run_dir, resume=resume, device=self.device, progress=False, log=_log, on_step=on_step,
                        should_stop=job.stop.is_set)
        except BaseException:
            if not run_dir.exists():  # tune leaves no folder of a run that failed before its first checkpoint
                shutil.rmtree(self.runs_dir / UPLOADS / job.run, ignore_errors=True)
            raise

    # ---------------------------------------------------------------------------------------------- editing

    def finished_run(self, name: str | None) -> RunInfo:
        """The finished run ``name``, tuned on a base this server has; :class:`ConfigError` otherwise."""
        run = next((r for r in list_runs(self.runs_dir) if r.name == name), None)
        if run is None or run.state != "finished":
            raise ConfigError(f"run {name!r} is not a finished run of {self.runs_dir.name}/; pick one in the list")
        if self.base_label(run.config.tune.base_model) is None:
            raise ConfigError(f"run {name} was tuned on {run.config.tune.base_model}, which this server was not started "
                              "with; restart it with --base-model naming that model")
        return run

    def submit_edit(self, run: RunInfo, prompts: list[str], sample: SampleConfig) -> Job:
        return self.jobs.submit(Job("edit", run.name, lambda job: self._edit(job, run, prompts, sample), total=len(prompts)))

    def _edit(self, job: Job, run: RunInfo, prompts: list[str], sample: SampleConfig) -> object:
        from .editing import edit, load_run

        job.phase = "loading the run"
        tuned = load_run(run.path, base_model=self.load_base(run.config.tune.base_model), device=self.device)
        job.phase = f"sampling {len(prompts)} prompt{'s' if len(prompts) > 1 else ''}"
        return edit(tuned, prompts, sample, run.path / EDITS, progress=False)

    def close(self) -> None:
        self.jobs.close()


def _log(message: str) -> None:
    print(message, file=sys.stderr)


# ------------------------------------------------------------------------------------------------ page: text


def loss_curve_svg(losses: list[float], width: int = 360, height: int = 110) -> str:
    """The losses as an inline SVG line (no script, no file): the page draws it offline."""
    if len(losses) < 2:
        return ""
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    points = " ".join(f"{4 + i * (width - 8) / (len(losses) - 1):.1f},{4 + (high - v) / span * (height - 8):.1f}"
                      for i, v in enumerate(losses))
    return (f"<svg class='loss-curve' width='{width}' height='{height + 16}' viewBox='0 0 {width} {height + 16}'>"
            f"<rect x='0' y='0' width='{width}' height='{height}' fill='none' stroke='#ccc'/>"
            f"<polyline points='{points}' fill='none' stroke='#e8590c' stroke-width='1.5'/>"
            f"<text x='2' y='{height + 13}' font-size='11' fill='#666'>loss {low:.4f} to {high:.4f}, "
            f"{len(losses)} steps</text></svg>")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "estimating"
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def job_line(job: Job, position: int | None = None) -> str:
    """One line of text about ``job``, as the status panel and the tabs show it."""
    what = f"{'tuning' if job.kind == 'tune' else 'editing'} {job.run}"
    if job.state == "waiting":
        return f"#{job.id} {what}: waiting, position {position} in the queue"
    if job.state == "running":
        if job.kind == "tune" and job.step:
            loss = f", loss {job.losses[-1]:.4f}" if job.losses else ""
            left = f", about {_duration(job.seconds_left())} left" if job.step < job.total else ""
            return f"#{job.id} {what}: step {job.step} of {job.total}{loss}{left} ({job.phase})"
        return f"#{job.id} {what}: {job.phase}"
    if job.state == "done":
        return f"#{job.id} {what}: finished" + (" (ready in the Edit tab)" if job.kind == "tune" else "")
    if job.state == "cancelled":
        kept = f" at step {job.step} of {job.total}; resume it from the Runs tab" if job.kind == "tune" and job.step else ""
        return f"#{job.id} {what}: cancelled{kept}"
    return f"#{job.id} {what}: failed: {job.error}"


def status_html(studio: Studio) -> str:
    running, waiting, finished = studio.jobs.snapshot()
    parts = []
    if running is not None:
        parts.append(f"<p class='job-running'><b>Running:</b> {html.escape(job_line(running))}</p>")
        if running.kind == "tune":
            parts.append(loss_curve_svg(running.losses))
    else:
        parts.append("<p class='job-idle'>No job is running.</p>")
    for index, job in enumerate(waiting, 1):
        parts.append(f"<p class='job-waiting'>{html.escape(job_line(job, index))}</p>")
    for job in finished[:3]:
        parts.append(f"<p class='job-ended'>{html.escape(job_line(job))}</p>")
    return "<div id='status-inner'>" + "".join(parts) + "</div>"


def runs_html(studio: Studio, runs: list[RunInfo] | None = None) -> str:
    runs = list_runs(studio.runs_dir) if runs is None else runs
    if not runs:
        return f"<p>No runs yet in {html.escape(studio.runs_dir.name)}/: tune one in the Tune tab.</p>"
    running, waiting, _ = studio.jobs.snapshot()
    busy = {job.run: job for job in ([running] if running else []) + waiting}
    rows = []
    for run in runs:
        state = run.state
        if run.name in busy:
            state = "tuning now" if busy[run.name] is running and running.kind == "tune" else state
        elif run.state == "interrupted":
            state = f"interrupted at step {run.step} of {run.steps} (resumable)"
        elif run.state == "incomplete":
            state = "incomplete: stopped before its first checkpoint"
        vc = run.config.video if run.config else None
        base = studio.base_label(run.config.tune.base_model) or run.config.tune.base_model if run.config else ""
        cells = [run.name, state, vc.prompt if vc else "", f"{vc.num_frames} x {vc.width}x{vc.height}" if vc else "",
                 str(run.steps or ""), base]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("run", "state", "prompt", "frames x size", "steps", "base model"))
    return f"<table class='runs'><tr>{head}</tr>{''.join(rows)}</table>"


def run_settings_md(studio: Studio, run: RunInfo) -> str:
    vc, tc = run.config.video, run.config.tune
    losses = logged_losses(run.path)
    return "\n".join([
        f"**{run.name}**: {vc.prompt}",
        f"- {vc.num_frames} frames from frame {vc.start}, every {vc.stride}; {vc.width}x{vc.height} ({vc.resize})",
        f"- {tc.steps} steps at learning rate {tc.learning_rate:g}"
        + (f"; final loss {losses[-1]:.4f}" if losses else ""),
        f"- base model: {studio.base_label(tc.base_model) or tc.base_model}",
    ])


def _error(text: str) -> str:
    return f"<div class='error-message'><b>Error:</b> {html.escape(text)}</div>"


def _note_html(text: str) -> str:
    return f"<div class='note-message'>{html.escape(text)}</div>"


def _public(message: str, *paths: Path | None) -> str:
    """``message`` with the server's folders of ``paths`` left out: the page shows file names."""
    for path in paths:
        if path is not None:
            message = message.replace(str(path), path.name)
    return message


# ------------------------------------------------------------------------------------------------------ page

CSS = """
.error-message { color: #b42318; background: #fef3f2; border: 1px solid #fda29b; padding: 8px; border-radius: 6px; }
.note-message { color: #1d2939; padding: 4px 0; }
table.runs { border-collapse: collapse; } table.runs td, table.runs th { border: 1px solid #ddd; padding: 4px 8px; }
"""


def build_page(studio: Studio):
    """The Gradio page of ``studio``: Tune, Edit and Runs tabs, under a status panel that every tab shares."""
    import gradio as gr

    from .demo import DemoSettings
    from .video import VIDEO_SUFFIXES, probe_video, read_video

    defaults = DemoSettings()
    examples = list(example_clips())
    base_labels = list(studio.bases)

    def finished_names(runs: list[RunInfo] | None = None) -> list[str]:
        return [r.name for r in runs or list_runs(studio.runs_dir) if r.state == "finished"]

    def interrupted_names(runs: list[RunInfo] | None = None) -> list[str]:
        busy = studio.jobs.busy_runs()
        return [r.name for r in runs or list_runs(studio.runs_dir) if r.state == "interrupted" and r.name not in busy]

    with gr.Blocks(title="tuneavideo", analytics_enabled=False) as page:
        gr.Markdown("## Tune-A-Video\nTune a model on one video, then edit the video with new prompts. "
                    f"Runs are kept in `{studio.runs_dir.name}/` on the server.")
        status = gr.HTML(lambda: status_html(studio), elem_id="status")
        cancel = gr.Button("Cancel my job (tuning stops after its step and keeps a checkpoint to resume)", size="sm",
                           elem_id="cancel")
        my_job = gr.State(None)  # the id of the job this page last started
        my_job_line = gr.HTML(elem_id="my-job")

        # ---------------------------------------------------------------------------------------------- Tune
        with gr.Tab("Tune", id="tune"):
            with gr.Row():
                with gr.Column():
                    upload = gr.File(label="Upload a video", file_types=list(VIDEO_SUFFIXES), elem_id="upload")
                    example = gr.Dropdown(["(none)"] + examples, value="(none)", label="... or a toy-world example clip",
                                          elem_id="example")
                    preview = gr.Video(label="Source", interactive=False, autoplay=True, loop=True, height=256,
                                       elem_id="source-preview")
                    source_message = gr.HTML(elem_id="source-message")
                with gr.Column():
                    prompt = gr.Textbox(label="Source prompt: what the video shows", elem_id="prompt")
                    with gr.Row():
                        num_frames = gr.Number(defaults.num_frames, label="Frames", precision=0, minimum=1, elem_id="frames")
                        stride = gr.Number(1, label="Stride (every N-th frame)", precision=0, minimum=1, elem_id="stride")
                        start = gr.Number(0, label="Start frame", precision=0, minimum=0, elem_id="start")
                    with gr.Row():
                        width = gr.Number(defaults.size, label="Width (multiple of 8)", precision=0, elem_id="width")
                        height = gr.Number(defaults.size, label="Height (multiple of 8)", precision=0, elem_id="height")
                        resize = gr.Dropdown(list(RESIZE_MODES), value="crop", label="Resize", elem_id="resize")
                    with gr.Row():
                        steps = gr.Number(defaults.train_steps, label="Tuning steps", precision=0, minimum=1, elem_id="train-steps")
                        learning_rate = gr.Number(defaults.learning_rate, label="Learning rate", elem_id="learning-rate")
                        inversion_steps = gr.Number(defaults.steps, label="DDIM inversion steps", precision=0, minimum=1,
                                                    elem_id="inversion-steps")
                    base = gr.Dropdown(base_labels, value=base_labels[0], label="Base model", elem_id="base-model")
                    name = gr.Textbox(label="Run name (optional)", elem_id="run-name")
                    start_button = gr.Button("Start tuning", variant="primary", elem_id="start-tuning")
                    tune_message = gr.HTML(elem_id="tune-message")

        # ---------------------------------------------------------------------------------------------- Edit
        with gr.Tab("Edit", id="edit") as edit_tab:
            with gr.Row():
                run_choice = gr.Dropdown(finished_names(), value=None, label="Finished run", elem_id="edit-run", scale=3)
                refresh = gr.Button("Refresh the list", size="sm", scale=1)
            run_settings = gr.Markdown(elem_id="run-settings")
            prompts = gr.Textbox(label=f"Edit prompts, one a line (at most {MAX_PROMPTS})", lines=3, elem_id="edit-prompts")
            with gr.Row():
                guidance = gr.Number(defaults.guidance_scale, label="Guidance scale", elem_id="guidance")
                edit_steps = gr.Number(defaults.steps, label="DDIM steps", precision=0, minimum=1, elem_id="edit-steps")
                seed = gr.Number(defaults.seed, label="Seed", precision=0, elem_id="seed")
            with gr.Accordion("Inversion and attention control", open=False):
                with gr.Row():
                    inversion = gr.Dropdown(list(INVERSION_METHODS), value="ddim", label="Inversion", elem_id="inversion")
                    control = gr.Dropdown(list(CONTROL_MODES), value="none", label="Attention control", elem_id="control")
                    cross_replace = gr.Number(0.8, label="Cross-attention replace (fraction of steps)")
                    self_replace = gr.Number(0.4, label="Self-attention replace (fraction of steps)")
                with gr.Row():
                    blend = gr.Textbox(label="Blend words (space-separated)")
                    blend_threshold = gr.Number(0.3, label="Blend threshold")
                    reweight = gr.Textbox(label="Reweight (WORD=FACTOR, space-separated)")
                    coupled = gr.Checkbox(False, label="Coupled guidance")
            edit_button = gr.Button("Edit", variant="primary", elem_id="edit-button")
            edit_message = gr.HTML(elem_id="edit-message")
            with gr.Row(elem_id="results"):
                with gr.Column(min_width=160):
                    source_video = gr.Video(label="Source", interactive=False, autoplay=True, loop=True, height=256, elem_id="edit-source")
                slots = []
                for index in range(MAX_PROMPTS):
                    with gr.Column(visible=False, min_width=160) as column:
                        video = gr.Video(interactive=False, autoplay=True, loop=True, height=256, elem_id=f"result-{index}")
                        files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id=f"files-{index}")
                    slots.append((column, video, files))

        # ---------------------------------------------------------------------------------------------- Runs
        with gr.Tab("Runs", id="runs") as runs_tab:
            runs_table = gr.HTML(lambda: runs_html(studio), elem_id="runs-table")
            with gr.Row():
                resume_choice = gr.Dropdown(interrupted_names(), value=None, label="Interrupted run", elem_id="resume-run")
                resume_steps = gr.Number(None, label="Tuning steps in all", precision=0, elem_id="resume-steps")
                resume_button = gr.Button("Resume", elem_id="resume-button")
            resume_message = gr.HTML(elem_id="resume-message")

        # ---------------------------------------------------------------------------------------------- events

        def choose_upload(file):
            if not file:
                return gr.skip(), ""
            path = Path(file)
            try:
                info = probe_video(path)
            except TuneAVideoError as error:
                return None, _error(_public(str(error), path))
            return str(path), _note_html(f"{path.name}: {info.num_frames} frames at {info.fps:g} fps, {info.width}x{info.height}")

        def choose_example(caption):
            if caption not in examples:
                return gr.skip(), "", gr.skip()
            _, clip_preview = render_example(studio.runs_dir, caption)
            return str(clip_preview), _note_html(f"example: {caption} (8 frames, 64x64)"), caption

        upload.upload(choose_upload, upload, [preview, source_message])
        upload.clear(lambda: (None, ""), None, [preview, source_message])
        example.change(choose_example, example, [preview, source_message, prompt])

        def start_tuning(file, caption, prompt, frames, stride, start, width, height, resize, steps, lr, inv_steps, base_label, name):
            uploaded = Path(file) if file else None
            try:
                if uploaded is None and caption not in examples:
                    raise ConfigError("no video: upload one, or pick an example clip")
                if base_label not in studio.bases:
                    raise ConfigError("pick a base model from the list")
                config = RunConfig()
                vc = config.video
                vc.prompt = (prompt or "").strip()
                if not vc.prompt:
                    raise ConfigError("the source prompt is empty; describe the video, e.g. 'a man is skiing'")
                numbers = {"frames": frames, "stride": stride, "start": start, "width": width, "height": height,
                           "tuning steps": steps, "inversion steps": inv_steps}
                for label, value in numbers.items():
                    if value is None or int(value) != value:
                        raise ConfigError(f"{label} must be a whole number")
                if lr is None:
                    raise ConfigError("give a learning rate, e.g. 3e-5")
                vc.num_frames, vc.stride, vc.start, vc.width, vc.height = int(frames), int(stride), int(start), int(width), int(height)
                vc.resize = resize
                config.tune.base_model = studio.bases[base_label]
                config.tune.steps, config.tune.learning_rate = int(steps), float(lr)
                config.sample.num_inversion_steps = config.sample.num_inference_steps = int(inv_steps)
                config.validate("settings")
                if uploaded is not None:
                    vc.path = str(uploaded)
                else:
                    vc.path = str(render_example(studio.runs_dir, caption)[0])
                read_video(vc.path, num_frames=vc.num_frames, start=vc.start, stride=vc.stride, width=vc.width,
                           height=vc.height, resize=vc.resize)  # not a video, too short: said now, before queueing
                job = studio.submit_tune(config, (name or "").strip(), uploaded)
            except TuneAVideoError as error:
                return gr.skip(), _error(_public(str(error), uploaded, studio.runs_dir))
            return job.id, _note_html(f"started job #{job.id}, tuning run {job.run}: its progress shows above")

        start_button.click(start_tuning, [upload, example, prompt, num_frames, stride, start, width, height, resize, steps,
                                          learning_rate, inversion_steps, base, name], [my_job, tune_message],
                           concurrency_limit=None)

        def cancel_job(job_id):
            job = studio.jobs.get(job_id)
            if job is None or job.state not in ("waiting", "running"):
                running, _, _ = studio.jobs.snapshot()
                job = running if running is not None and running.kind == "tune" else None
            if job is None or not studio.jobs.cancel(job):
                return _note_html("no job of this page is waiting or tuning")
            return _note_html(f"cancelling job #{job.id} ({job.run})")

        cancel.click(cancel_job, my_job, my_job_line, concurrency_limit=None)

        def tick(job_id, shown_finished, shown_interrupted):
            job = studio.jobs.get(job_id)
            line = ""
            if job is not None:
                message = "Your job " + job_line(job, studio.jobs.position(job))
                line = _error(message) if job.state == "failed" else _note_html(message)
            runs = list_runs(studio.runs_dir)  # once a second per page: read once
            finished, interrupted = finished_names(runs), interrupted_names(runs)
            return (status_html(studio), runs_html(studio, runs), line,
                    gr.update(choices=finished) if finished != shown_finished else gr.skip(), finished,
                    gr.update(choices=interrupted) if interrupted != shown_interrupted else gr.skip(), interrupted)

        shown_finished, shown_interrupted = gr.State(finished_names()), gr.State(interrupted_names())
        gr.Timer(1.0).tick(tick, [my_job, shown_finished, shown_interrupted],
                           [status, runs_table, my_job_line, run_choice, shown_finished, resume_choice, shown_interrupted],
                           show_progress="hidden", concurrency_limit=None)

        def show_run(run_name):
            hidden = [x for column, _, _ in slots for x in (gr.update(visible=False), None, None)]
            if not run_name:
                return "", None, *hidden
            try:
                run = studio.finished_run(run_name)
            except TuneAVideoError as error:
                return _error(str(error)), None, *hidden
            return run_settings_md(studio, run), str(run.path / SOURCE), *hidden

        slot_outputs = [x for slot in slots for x in slot]
        run_choice.change(show_run, run_choice, [run_settings, source_video, *slot_outputs])
        refresh.click(lambda: gr.update(choices=finished_names()), None, run_choice)
        edit_tab.select(lambda: gr.update(choices=finished_names()), None, run_choice)
        runs_tab.select(lambda: (runs_html(studio), gr.update(choices=interrupted_names())), None, [runs_table, resume_choice])

        def run_edit(run_name, text, guidance, steps, seed, inversion, control, cross, self_, blend, threshold, reweight, coupled):
            try:
                run = studio.finished_run(run_name)
                lines = [line.strip() for line in (text or "").splitlines()]
                prompts = [line for line in lines if line]
                if not prompts:
                    raise ConfigError("no edit prompt: write at least one, one a line")
                if len(prompts) > MAX_PROMPTS:
                    raise ConfigError(f"{len(prompts)} prompts: give at most {MAX_PROMPTS} at a time")
                for label, value in (("DDIM steps", steps), ("seed", seed)):
                    if value is None or int(value) != value:
                        raise ConfigError(f"{label} must be a whole number")
                for label, value in (("guidance scale", guidance), ("cross-attention replace", cross),
                                     ("self-attention replace", self_), ("blend threshold", threshold)):
                    if value is None:
                        raise ConfigError(f"give a {label}")
                sample = replace(run.config.sample, num_inference_steps=int(steps), num_inversion_steps=int(steps),
                                 guidance_scale=float(guidance), seed=int(seed), inversion=inversion, control=control,
                                 cross_replace=float(cross), self_replace=float(self_), blend=(blend or "").split(),
                                 blend_threshold=float(threshold), reweight=(reweight or "").split(), coupled_guidance=bool(coupled))
                replace(run.config, sample=sample).validate("edit settings")
                job = studio.submit_edit(run, prompts, sample)
            except TuneAVideoError as error:
                yield gr.skip(), _error(str(error)), *[gr.skip()] * len(slot_outputs)
                return
            while job.state in ("waiting", "running"):
                yield job.id, _note_html(job_line(job, studio.jobs.position(job))), *[gr.skip()] * len(slot_outputs)
                time.sleep(0.5)
            if job.state != "done":
                yield job.id, _error(job_line(job)), *[gr.skip()] * len(slot_outputs)
                return
            files = job.result.files  # per prompt: .mp4, .gif, .json; then the side-by-side .mp4 and .json
            updates = []
            for index, (column, video, file_list) in enumerate(slots):
                if index < len(prompts):
                    mp4, gif = files[3 * index], files[3 * index + 1]
                    updates += [gr.update(visible=True), gr.update(value=str(mp4), label=prompts[index]), [str(mp4), str(gif)]]
                else:
                    updates += [gr.update(visible=False), None, None]
            yield job.id, _note_html(f"{job_line(job)}: {len(prompts)} videos in {run.name}/{EDITS}/"), *updates

        edit_button.click(run_edit, [run_choice, prompts, guidance, edit_steps, seed, inversion, control, cross_replace,
                                     self_replace, blend, blend_threshold, reweight, coupled],
                          [my_job, edit_message, *slot_outputs], concurrency_limit=None)

        def resume(run_name, steps):
            run = next((r for r in list_runs(studio.runs_dir) if r.name == run_name and r.state == "interrupted"), None)
            try:
                if run is None or run_name in studio.jobs.busy_runs():
                    raise ConfigError("pick an interrupted run from the list")
                if steps is None or int(steps) != steps:
                    raise ConfigError("give the tuning steps in all, a whole number")
                job = studio.submit_resume(run, int(steps))
            except TuneAVideoError as error:
                return gr.skip(), _error(str(error))
            return job.id, _note_html(f"started job #{job.id}, resuming run {job.run}: its progress shows above")

        resume_choice.change(lambda n: next((r.steps for r in list_runs(studio.runs_dir) if r.name == n), None),
                             resume_choice, resume_steps)
        resume_button.click(resume, [resume_choice, resume_steps], [my_job, resume_message], concurrency_limit=None)
    return page


def warn_if_exposed(host: str) -> None:
    """Say on stderr when the page is served beyond this machine."""
    if host not in LOCAL_HOSTS:
        print(f"warning: serving on {host}: anyone who can reach this address can tune and edit runs, upload videos "
              "and read the runs folder; bind to 127.0.0.1 unless that is what you want", file=sys.stderr)


def serve(runs: str | Path = "runs", base_models: list[str] | tuple[str, ...] = (), host: str = "127.0.0.1", port: int = 7860,
          device: str | None = None, max_upload: str = MAX_UPLOAD, block: bool = True):
    """Serve the page of a runs folder; returns ``(studio, page, url)`` when ``block`` is false (tests)."""
    studio = Studio(runs, base_models, device)
    warn_if_exposed(host)
    # Gradio keeps uploads and the files it serves in GRADIO_TEMP_DIR (read when it is imported): inside the runs
    # folder, so the page reads and writes nothing outside it. No analytics, no version check.
    os.environ["GRADIO_TEMP_DIR"] = str(studio.runs_dir / GRADIO)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(studio.runs_dir / GRADIO / "examples")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio  # noqa: F401
    except ImportError:
        studio.close()
        raise ConfigError("the web interface needs Gradio: pip install 'tuneavideo[ui]'") from None
    page = build_page(studio)
    page.queue(default_concurrency_limit=None)
    try:
        _, url, _ = page.launch(server_name=host, server_port=port, prevent_thread_lock=True, show_error=False,
                                allowed_paths=[str(studio.runs_dir)], max_file_size=max_upload, footer_links=[],
                                css=CSS, quiet=True, ssr_mode=False, mcp_server=False, pwa=False, inbrowser=False)
    except OSError as error:
        studio.close()
        raise ConfigError(f"cannot serve on {host}:{port} ({error}); pick another --port") from None
    if not block:
        return studio, page, url
    print(f"serving {studio.runs_dir} at {url}; Ctrl+C stops (a tuning job stops after its step, keeping a checkpoint)",
          file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        page.close()
        studio.close()
