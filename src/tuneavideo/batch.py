"""Many videos: a manifest of jobs (tune on a video, then edit it with prompts), each an ordinary run folder.

The unit of parallel work is the job: tuning one video fits one GPU. Jobs run on worker processes from a scheduler
that already exists, never a queue of our own: locally one ``concurrent.futures.ProcessPoolExecutor`` of one process
per GPU (``CUDA_VISIBLE_DEVICES`` set in it; one process on the CPU), or Ray tasks (``ray.remote`` with one GPU each
when the cluster has GPUs, retried by Ray when their worker dies). A worker that dies loses only its job, which runs
again (at most ``retries`` times) and resumes from its run folder's checkpoint.

A manifest (YAML)::

    defaults:                  # RunConfig's sections (video, tune, sample) over its defaults, for every job
      tune: {base_model: stable-diffusion-v1-5/stable-diffusion-v1-5, steps: 300}
      video: {num_frames: 24, stride: 2}
    jobs:
      - video: videos/man-skiing.mp4           # relative paths: from the manifest's folder
        prompt: a man is skiing
        edits: [spider man is skiing on the beach, a man is skiing at sunset]
      - name: rabbit                           # the run folder's name (default: the video's file name)
        video: videos/rabbit-watermelon.mp4
        prompt: a rabbit is eating a watermelon
        edits: [a tiger is eating a watermelon]
        settings: {tune: {steps: 500}}         # this job's settings over the defaults

Each job's run folder is ``OUTPUT/NAME``; its edits go to ``OUTPUT/NAME/edits``. A job whose folder holds the tuned
model and every edit is skipped; one with a checkpoint resumes.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import multiprocessing
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import ConfigError, RunConfig
from .errors import TuneAVideoError
from .runfolder import ADAPTER, ATTEMPTS, CONFIG, EDITS, atomic_json, first_line, latest_checkpoint, slug
from .video import probe_video

MANIFEST_KEYS = ("defaults", "jobs")
JOB_KEYS = ("name", "video", "prompt", "edits", "settings")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

# Test-only: a file path. While the file does not exist, the first job process that finishes a tuning step with a
# checkpoint in its run folder creates it and ends at once with os._exit(1), as a worker killed mid-job would (the
# tests use it to check that the job is retried and resumes). Unset, it does nothing.
CRASH_ENV = "TUNEAVIDEO_BATCH_CRASH_MARKER"


@dataclass
class Job:
    """One video to tune and the prompts to edit it with; ``config`` is complete (video path and prompt set)."""

    name: str
    config: RunConfig
    edits: list[str]


@dataclass
class Outcome:
    name: str
    status: str  # done | skipped | failed
    reason: str = ""  # why it failed, one line; for done, what ran
    attempts: int = 0  # the processes that ran it in this batch (more than 1: a worker died)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------------ manifest


def load_manifest(path: str | Path) -> list[Job]:
    """Read and check a whole manifest before any work: every job's settings through ``RunConfig``'s validation, its
    video (there, and long enough), its prompts and its name. :class:`ConfigError` naming the job and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"manifest {path} does not exist; give a YAML file of jobs (see 'tuneavideo batch --help')")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML ({str(error).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list) or not data["jobs"]:
        raise ConfigError(f"{path} holds no list of jobs; write 'jobs:' with one entry per video (video, prompt, edits)")
    unknown = sorted(set(data) - set(MANIFEST_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; a manifest has {', '.join(MANIFEST_KEYS)}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: defaults must be a mapping of RunConfig sections (video, tune, sample)")
    folder = path.parent
    jobs, names = [], {}
    for index, entry in enumerate(data["jobs"], 1):
        job = _job(entry, defaults, folder, f"{path}: job {index}")
        if job.name in names:
            raise ConfigError(f"{path}: jobs {names[job.name]} and {index} are both named {job.name!r} (the run folder's "
                              "name); give each a distinct 'name'")
        names[job.name] = index
        jobs.append(job)
    return jobs


def _job(entry: object, defaults: dict, folder: Path, where: str) -> Job:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} is not a mapping; write video, prompt and edits for it")
    unknown = sorted(set(entry) - set(JOB_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; a job has {', '.join(JOB_KEYS)} (settings: video, tune, "
                          "sample sections)")
    video = entry.get("video")
    if not isinstance(video, str) or not video:
        raise ConfigError(f"{where}: no video; write video: PATH (a video file or a folder of frames)")
    name = entry.get("name", slug(Path(video).stem))
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: name {name!r} is not a folder name of letters, digits, '.', '_' and '-'; "
                          "write e.g. name: skiing")
    where = f"{where} ({name})"
    settings = entry.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: settings must be a mapping of RunConfig sections (video, tune, sample)")
    merged = copy.deepcopy(defaults)
    for section, values in settings.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    for key in ("path", "prompt"):
        if key in (merged.get("video") or {}):
            raise ConfigError(f"{where}: video.{key} is the job's own; write it as the job's "
                              f"{'video' if key == 'path' else 'prompt'}")
    try:
        config = RunConfig.from_dict(merged, where)  # RunConfig's checks, the one home of the allowed values
    except ConfigError as error:
        raise ConfigError(str(error) if str(error).startswith(where) else f"{where}: {error}") from None
    path = Path(video) if Path(video).is_absolute() else folder / video
    prompt, edits = entry.get("prompt"), entry.get("edits")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"{where}: no prompt; write prompt: 'what the video shows', e.g. 'a man is skiing'")
    if not isinstance(edits, list) or not edits or not all(isinstance(e, str) and e.strip() for e in edits):
        raise ConfigError(f"{where}: edits must be a list of edit prompts, e.g. edits: [a man is skiing at sunset]")
    stems = [slug(e) for e in edits]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"{where}: two edits share the file name {next(s for s in stems if stems.count(s) > 1)!r}; "
                          "make each prompt distinct in its letters and digits")
    base = config.tune.base_model
    if not base:
        raise ConfigError(f"{where}: no base model; set tune.base_model in defaults or the job's settings")
    if not Path(base).is_absolute() and (folder / base).exists():
        config.tune.base_model = str((folder / base).resolve())
    vc = config.video
    try:
        info = probe_video(path)  # a missing or unreadable video fails the manifest, not the job
    except TuneAVideoError as error:
        raise ConfigError(f"{where}: {error}") from None
    needed = vc.start + (vc.num_frames - 1) * vc.stride + 1
    if info.num_frames < needed:
        raise ConfigError(f"{where}: {path} has {info.num_frames} frames, and {vc.num_frames} frames from {vc.start} at stride "
                          f"{vc.stride} need {needed}; lower video.num_frames or video.stride")
    vc.path, vc.prompt = str(path.resolve()), prompt
    config.validate(where)
    return Job(name, config, list(edits))


# --------------------------------------------------------------------------------------------------------- one job


def missing_edits(job: Job, run_dir: Path) -> list[str]:
    """The job's edit prompts with no finished edit in ``run_dir/edits`` (its JSON, written last, is there)."""
    return [prompt for prompt in job.edits if not (run_dir / EDITS / f"{slug(prompt)}.json").is_file()]


def is_finished(job: Job, run_dir: Path) -> bool:
    return (run_dir / ADAPTER).is_file() and not missing_edits(job, run_dir)


def settings_changed(job: Job, run_dir: Path) -> str | None:
    """What the job's video and tune settings change from those ``run_dir`` was tuned with (one line), or None."""
    if not (run_dir / CONFIG).is_file():
        return None
    from .tuning import RESUME_FIXED

    saved = RunConfig.load(run_dir / CONFIG)
    for section, names in RESUME_FIXED.items():  # what decides the tuned model; the rest may change, as on --resume
        for name in names:
            old, new = getattr(getattr(saved, section), name), getattr(getattr(job.config, section), name)
            if (tuple(old) if isinstance(old, (list, tuple)) else old) != (tuple(new) if isinstance(new, (list, tuple)) else new):
                return f"{section}.{name} is {new!r} but its run folder was tuned with {old!r}"
    return None


def run_job(job: Job, run_dir: str | Path, batch_id: str = "", device: str | None = None) -> Outcome:
    """Run one job in this process: tune into ``run_dir`` (resuming from its checkpoint when it has one) unless it is
    tuned, then the edits it lacks. Errors a user can fix come back as a failed :class:`Outcome`; a process that
    dies is the scheduler's to retry."""
    from .editing import edit, load_run
    from .loading import load_base
    from .tuning import tune

    run_dir = Path(run_dir)
    began = time.perf_counter()
    attempts = _count_attempt(run_dir, job.name, batch_id)
    try:
        changed = settings_changed(job, run_dir)
        if changed:
            raise ConfigError(f"{changed}; delete the folder to tune it again, or give the job another name")
        base = load_base(job.config.tune.base_model)
        did = []
        if not (run_dir / ADAPTER).is_file():
            resume = latest_checkpoint(run_dir) is not None
            if not resume and (run_dir / CONFIG).is_file():
                _clear_unfinished(run_dir)  # a process that died before the first checkpoint: start again
            tune(base, copy.deepcopy(job.config), run_dir, resume=resume, device=device, progress=False, log=_quiet,
                 on_step=_crash_hook(run_dir))
            did.append(f"tuned {job.config.tune.steps} steps" + (" (resumed)" if resume else ""))
        todo = missing_edits(job, run_dir)
        if todo:
            for prompt in todo:  # the videos of an edit whose process died before its JSON: written again
                for suffix in (".mp4", ".gif"):
                    (run_dir / EDITS / f"{slug(prompt)}{suffix}").unlink(missing_ok=True)
            tuned = load_run(run_dir, base_model=base, device=device)
            edit(tuned, todo, job.config.sample, run_dir / EDITS, progress=False)
            did.append(f"{len(todo)} edit{'s' if len(todo) != 1 else ''}")
        return Outcome(job.name, "done", ", ".join(did), attempts, time.perf_counter() - began)
    except (TuneAVideoError, OSError) as error:
        return Outcome(job.name, "failed", first_line(error), attempts, time.perf_counter() - began)
    except Exception as error:  # noqa: BLE001 - one job's failure (out of memory, a bug) must not end the batch
        return Outcome(job.name, "failed", f"{type(error).__name__}: {first_line(error)}", attempts, time.perf_counter() - began)


def _quiet(message: str) -> None:
    """Tuning's notes, dropped: a batch prints one line per job."""


def _attempts_path(run_dir: Path) -> Path:
    return run_dir.parent / ATTEMPTS / f"{run_dir.name}.json"


def _count_attempt(run_dir: Path, name: str, batch_id: str) -> int:
    """Record in the batch folder that a process started the job in batch ``batch_id``; returns the count."""
    path = _attempts_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {}
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except ValueError:
            record = {}
    attempts = record.get("attempts", 0) + 1 if record.get("batch") == batch_id else 1
    atomic_json(path, {"job": name, "batch": batch_id, "attempts": attempts})
    return attempts


def attempts_recorded(run_dir: Path, batch_id: str) -> int:
    """How many processes started the job in ``run_dir`` in batch ``batch_id``."""
    try:
        record = json.loads(_attempts_path(Path(run_dir)).read_text())
    except (OSError, ValueError):
        return 0
    return record.get("attempts", 0) if record.get("batch") == batch_id else 0


def _clear_unfinished(run_dir: Path) -> None:
    """Empty a run folder whose tuning died before its first checkpoint (tune refuses a folder with files in it)."""
    for child in run_dir.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def _crash_hook(run_dir: Path) -> Callable[[int, float, float], None] | None:
    """The test-only crash of :data:`CRASH_ENV`, as tune's ``on_step``; None when the variable is unset."""
    marker = os.environ.get(CRASH_ENV)
    if not marker:
        return None

    def on_step(step: int, loss: float, seconds: float) -> None:
        if latest_checkpoint(run_dir) is None:
            return
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # one process only, across the batch
        except FileExistsError:
            return
        os._exit(1)

    return on_step


# ---------------------------------------------------------------------------------------------------- the batch


@dataclass
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def run_batch(
    jobs: list[Job],
    output: str | Path,
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    retries: int = 2,
    log: Callable[[str], None] = print,
) -> BatchResult:
    """Run every job into ``output/NAME``: skip finished ones, then the rest on local worker processes (``workers``:
    default one per CUDA GPU, one on the CPU) or on the Ray cluster at ``ray_address``. A job whose worker dies runs
    again, at most ``retries`` times. One line per job through ``log``, as it ends."""
    if retries < 0:
        raise ConfigError(f"--retries {retries}: give 0 or more")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: give at least 1")
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    result = BatchResult()
    todo = []
    for job in jobs:
        if is_finished(job, output / job.name):
            changed = settings_changed(job, output / job.name)
            if changed:
                result.outcomes.append(Outcome(job.name, "failed", f"{changed}; delete the folder to tune it again"))
                log(f"[{len(result.outcomes)}/{len(jobs)}] {job.name}: failed: {result.outcomes[-1].reason}")
            else:
                result.outcomes.append(Outcome(job.name, "skipped", "finished"))
                log(f"[{len(result.outcomes)}/{len(jobs)}] {job.name}: skipped (finished)")
        else:
            todo.append(job)
    if not todo:
        return result
    batch_id = uuid.uuid4().hex

    def report(outcome: Outcome) -> None:
        result.outcomes.append(outcome)
        retried = f" after {outcome.attempts - 1} worker death{'s' if outcome.attempts > 2 else ''}" if outcome.attempts > 1 else ""
        what = f"failed: {outcome.reason}" if outcome.status == "failed" else f"done in {outcome.seconds:.0f} s ({outcome.reason})"
        log(f"[{len(result.outcomes)}/{len(jobs)}] {outcome.name}: {what}{retried}")

    if ray_address is not None:
        _run_ray(todo, output, ray_address, retries, batch_id, report)
    else:
        _run_local(todo, output, workers, retries, batch_id, report)
    return result


def _died(job: Job, output: Path, batch_id: str, what: str) -> Outcome:
    attempts = attempts_recorded(output / job.name, batch_id)
    return Outcome(job.name, "failed", f"its worker died {attempts} time{'s' if attempts != 1 else ''} ({what}); "
                   "see the worker's log, then run the batch again to resume it", attempts)


def _pin_gpu(gpu: int | None) -> None:
    """A local worker's initializer: the one GPU it may see (before torch initialises CUDA in it)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def _run_local(jobs: list[Job], output: Path, workers: int | None, retries: int, batch_id: str,
               report: Callable[[Outcome], None]) -> None:
    """One single-process pool per GPU slot (one on the CPU): a worker that dies breaks only its own pool, so only
    its job is lost; that pool is replaced and the job submitted again, at most ``retries`` times."""
    import torch

    gpus = torch.cuda.device_count()
    slots = workers or max(1, gpus)
    context = multiprocessing.get_context("spawn")  # fresh processes: CUDA and threads never forked

    def pool(slot: int) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=_pin_gpu,
                                                      initargs=(slot % gpus if gpus else None,))

    pending = list(jobs)
    pools = {slot: pool(slot) for slot in range(min(slots, len(jobs)))}
    running: dict[concurrent.futures.Future, tuple[int, Job]] = {}
    deaths: dict[str, int] = {}
    try:
        while pending or running:
            busy = {slot for slot, _ in running.values()}
            for slot in pools:
                if pending and slot not in busy:
                    job = pending.pop(0)
                    running[pools[slot].submit(run_job, job, str(output / job.name), batch_id)] = (slot, job)
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                slot, job = running.pop(future)
                try:
                    report(future.result())
                except BrokenProcessPool:
                    pools[slot].shutdown(wait=False, cancel_futures=True)
                    pools[slot] = pool(slot)
                    deaths[job.name] = deaths.get(job.name, 0) + 1
                    if deaths[job.name] <= retries:
                        pending.insert(0, job)
                    else:
                        report(_died(job, output, batch_id, "process ended"))
    finally:
        for executor in pools.values():
            executor.shutdown(wait=True, cancel_futures=True)


def _run_ray(jobs: list[Job], output: Path, address: str, retries: int, batch_id: str,
             report: Callable[[Outcome], None]) -> None:
    """Ray tasks, one per job (one GPU each when the cluster has GPUs), retried by Ray when their worker dies. The run
    folders must be on storage every worker shares."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray; pip install 'tuneavideo[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    task = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=retries, retry_exceptions=False)(run_job)
    refs = {task.remote(job, str(output / job.name), batch_id): job for job in jobs}
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        job = refs.pop(ready[0])
        try:
            report(ray.get(ready[0]))
        except ray.exceptions.RayError as error:  # the worker died more than ``retries`` times, or Ray lost it
            report(_died(job, output, batch_id, type(error).__name__))


def summary(result: BatchResult) -> list[str]:
    """The batch's closing lines: the counts, then each failed job with its reason."""
    lines = [f"batch: {result.count('done')} done, {result.count('skipped')} skipped, {result.count('failed')} failed"]
    lines += [f"  failed {o.name}: {o.reason}" for o in result.failed]
    return lines
