"""Bad inputs and damaged files through the command line, in-process, on a tiny real model.

Every case must end with exit status 2 and exactly one ``error:`` line on stderr that names the problem, no
traceback, and no change on disk: a failed command leaves its output folder absent, or untouched when the folder
held files before (a run, or the user's own). The one exception is a diverged run, which keeps its last good
checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from tiny import save_tiny_sd

from tuneavideo.cli import main
from tuneavideo.config import RunConfig
from tuneavideo.runfolder import ADAPTER, CHECKPOINTS, CONFIG, INVERSION, LOG, SOURCE
from tuneavideo.tuning import tune
from tuneavideo.video import write_video

PROMPT = "a white square moving right"
SMALL = ["--num-frames", "4", "--width", "32", "--height", "32", "--train-steps", "2", "--inversion-steps", "2",
         "--no-gradient-checkpointing", "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A tiny SD folder, a 6-frame clip, a finished run and an interrupted one (checkpoint of step 1 of 3)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    sd = save_tiny_sd(root / "tiny-sd")
    frames = torch.zeros(6, 3, 32, 32)
    for i in range(6):
        frames[i, :, 10:18, 2 + 4 * i:10 + 4 * i] = 1.0
    clip = root / "square.mp4"
    write_video(clip, frames, fps=8)
    finished = root / "finished"
    assert main(["tune", "--base-model", str(sd), "--video", str(clip), "--prompt", PROMPT, "--output", str(finished), *SMALL]) == 0
    config = RunConfig.load(finished / CONFIG)
    config.tune.steps, config.tune.checkpoint_every = 3, 1
    interrupted = root / "interrupted"
    tune(str(sd), config, interrupted, stop_after=1, progress=False, log=lambda s: None)
    return {"sd": sd, "clip": clip, "finished": finished, "interrupted": interrupted}


@dataclass
class Ctx:
    """Paths of one case: its own folder ``dir``, and fresh copies of the shared runs on demand."""

    dir: Path
    shared: dict

    def __getattr__(self, name):
        if name in ("finished", "interrupted"):
            copy = self.dir / name
            if not copy.exists():
                shutil.copytree(self.shared[name], copy)
            return copy
        return self.shared[name]

    def tune(self, *extra, out="out", video=None, prompt=PROMPT):
        return ["tune", "--base-model", str(self.sd), "--video", str(video or self.clip), "--prompt", prompt,
                "--output", str(self.dir / out), *SMALL, *extra]

    def yaml(self, text: str) -> list[str]:
        path = self.dir / "settings.yaml"
        path.write_text(text)
        return ["tune", "--config", str(path), "--base-model", str(self.sd), "--video", str(self.clip),
                "--prompt", PROMPT, "--output", str(self.dir / "out")]

    def edit(self, *extra, run=None):
        return ["edit", str(run or self.finished), "--prompt", "a red square", "--steps", "1",
                "--output", str(self.dir / "edits"), *extra]

    def file(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def user_folder(c: Ctx) -> list[str]:
    c.file("out/config.yaml", b"my own settings: 1\n")
    c.file("out/source.mp4", c.clip.read_bytes())
    return c.tune()


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def damaged(name: str, how):
    def setup(c: Ctx) -> list[str]:
        how(c.finished / name)
        return c.edit()
    return setup


def nan_adapter(c: Ctx) -> list[str]:
    tensors = load_file(c.finished / ADAPTER)
    save_file({k: v * float("nan") for k, v in tensors.items()}, str(c.finished / ADAPTER), metadata={"format": "tuneavideo-adapter/1"})
    return c.edit()


def inv_latents(c: Ctx, name: str, data) -> list[str]:
    path = c.dir / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif name.endswith(".safetensors"):
        save_file(data, str(path))
    else:
        torch.save(data, path)
    return c.edit("--inv-latents", str(path))


def resume(c: Ctx, *extra, run=None) -> list[str]:
    run = run or c.interrupted
    return ["tune", "--output", str(run), "--resume", *extra]


def damaged_checkpoint(c: Ctx) -> list[str]:
    truncate(next((c.interrupted / "checkpoints").glob("step-*.pt")))
    return resume(c)


def stray_checkpoint(c: Ctx) -> list[str]:
    for path in (c.interrupted / "checkpoints").glob("*.pt"):
        path.unlink()
    c.file("interrupted/checkpoints/step-abc.pt", b"not mine")
    return resume(c)


def output_under_a_file(c: Ctx) -> list[str]:
    c.file("plain", b"x")
    return c.tune(out="plain/run")


def no_cuda(c: Ctx) -> list[str]:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return c.tune("--device", "cuda")


def read_only(c: Ctx) -> list[str]:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = c.dir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return c.tune(out="locked/run")


LONG = "a white square " * 40

# (id, argv from the case's Ctx, words the error line must hold)
CASES = [
    # the output folder
    ("user-files-in-output", user_folder, ["not empty", "config.yaml"]),
    ("output-is-a-file", lambda c: (c.file("out", b"x"), c.tune())[1], ["is a file"]),
    ("output-under-a-file", output_under_a_file, ["cannot write"]),
    ("read-only-output", read_only, ["cannot write"]),
    ("finished-run", lambda c: c.tune(out=c.finished.name), ["already holds a tuned model"]),
    ("interrupted-run-without-resume", lambda c: c.tune(out=c.interrupted.name), ["--resume"]),
    # values, from the command line
    ("learning-rate-negative", lambda c: c.tune("--learning-rate=-1e-3"), ["learning_rate", "positive"]),
    ("learning-rate-zero", lambda c: c.tune("--learning-rate", "0"), ["learning_rate"]),
    ("learning-rate-nan", lambda c: c.tune("--learning-rate", "nan"), ["learning_rate nan"]),
    ("learning-rate-inf", lambda c: c.tune("--learning-rate", "inf"), ["learning_rate inf"]),
    ("checkpoint-every-negative", lambda c: c.tune("--checkpoint-every", "-1"), ["checkpoint_every -1"]),
    ("train-steps-zero", lambda c: c.tune("--train-steps", "0"), ["--train-steps", "at least 1"]),
    ("num-frames-zero", lambda c: c.tune("--num-frames", "0"), ["num_frames"]),
    ("width-not-multiple-of-8", lambda c: c.tune("--width", "60"), ["multiple of 8"]),
    ("width-huge", lambda c: c.tune("--width", "100000"), ["width 100000", "4096"]),
    ("inversion-steps-zero", lambda c: c.tune("--inversion-steps", "0"), ["num_inversion_steps"]),
    ("eta-above-one", lambda c: c.tune("--eta", "2"), ["eta 2"]),
    ("device-banana", lambda c: c.tune("--device", "banana"), ["banana", "cpu"]),
    ("device-cuda-without-cuda", no_cuda, ["CUDA", "--device cpu"]),
    ("clip-too-short", lambda c: c.tune("--num-frames", "7"), ["has 6 frames"]),
    ("clip-missing", lambda c: c.tune(video=c.dir / "missing.mp4"), ["missing.mp4"]),
    ("empty-prompt", lambda c: c.tune(prompt=""), ["prompt"]),
    # values, from YAML: the same checks
    ("yaml-trainable-modules-text", lambda c: c.yaml("tune:\n  trainable_modules: attn1.to_q\n"),
     ["tune.trainable_modules", "[attn1.to_q]"]),
    ("yaml-prompt-list", lambda c: c.yaml("video:\n  prompt: [a, b]\n"), ["video.prompt", "text"]),
    ("yaml-num-frames-word", lambda c: c.yaml("video:\n  num_frames: eight\n"), ["video.num_frames", "whole number"]),
    ("yaml-width-quoted", lambda c: c.yaml("video:\n  width: \"64\"\n"), ["video.width", "without quotes"]),
    ("yaml-learning-rate-word", lambda c: c.yaml("tune:\n  learning_rate: fast\n"), ["tune.learning_rate", "a number"]),
    ("yaml-flag-text", lambda c: c.yaml("tune:\n  compile: maybe\n"), ["tune.compile", "true or false"]),
    ("yaml-unknown-key", lambda c: c.yaml("tune:\n  lr: 0.1\n"), ["tune.lr"]),
    ("yaml-reference-frames-word", lambda c: c.yaml("train_data:\n  n_sample_frames: eight\n"), ["num_frames", "whole number"]),
    ("yaml-reference-modules-text", lambda c: c.yaml("pretrained_model_path: x\ntrainable_modules: attn1.to_q\n"),
     ["trainable_modules"]),
    # --resume: what the run learns from may not change
    ("resume-other-prompt", lambda c: resume(c, "--prompt", "a cat"), ["video.prompt", "a cat"]),
    ("resume-other-video", lambda c: resume(c, "--video", str(c.file("other.mp4", c.clip.read_bytes()))), ["video.path"]),
    ("resume-other-size", lambda c: resume(c, "--width", "64"), ["video.width"]),
    ("resume-fewer-steps", lambda c: resume(c, "--train-steps", "1"), ["--train-steps 1", "1 step already done"]),
    ("resume-finished-run", lambda c: resume(c, run=c.finished), ["finished run"]),
    ("resume-no-run", lambda c: resume(c, run=c.dir), ["no run"]),
    ("resume-damaged-checkpoint", damaged_checkpoint, ["checkpoint", "damaged"]),
    ("resume-stray-checkpoint", stray_checkpoint, ["no checkpoint"]),
    # damaged run files and inputs of edit
    ("truncated-adapter", damaged(ADAPTER, truncate), ["adapter", "damaged"]),
    ("nan-adapter", nan_adapter, ["NaN", "lower learning rate"]),
    ("random-inversion", damaged(INVERSION, lambda p: p.write_bytes(os.urandom(300))), [INVERSION, "damaged", "delete it"]),
    ("truncated-inversion", damaged(INVERSION, truncate), [INVERSION, "damaged"]),
    ("inv-latents-random", lambda c: inv_latents(c, "latents.pt", os.urandom(200)), ["cannot read inverted latents"]),
    ("inv-latents-no-key", lambda c: inv_latents(c, "latents.safetensors", {"x": torch.zeros(1)}), ["does not hold video latents"]),
    ("inv-latents-wrong-shape", lambda c: inv_latents(c, "latents.pt", torch.zeros(1, 4, 3, 4, 4)), ["shape", "4 frames"]),
    ("inv-latents-missing", lambda c: c.edit("--inv-latents", str(c.dir / "none.pt")), ["none.pt"]),
    ("edit-num-frames", lambda c: c.edit("--num-frames", "16"), ["square.mp4 has 6 frames", "16 frames"]),
    ("edit-width", lambda c: c.edit("--width", "64", "--no-inversion"), ["--width 64"]),
    ("edit-steps-zero", lambda c: c.edit("--steps", "0"), ["num_inference_steps"]),
    ("edit-guidance-nan", lambda c: c.edit("--guidance", "nan"), ["guidance_scale nan"]),
    ("edit-fps-zero", lambda c: c.edit("--fps", "0"), ["fps 0"]),
    ("edit-empty-prompt", lambda c: c.edit("--prompt", " "), ["empty"]),
    ("edit-output-is-a-file", lambda c: (c.file("edits", b"x"), c.edit())[1], ["is a file"]),
    ("edit-device-banana", lambda c: c.edit("--device", "banana"), ["banana"]),
    ("edit-deleted-adapter", lambda c: ((c.finished / ADAPTER).unlink(), c.edit())[1], ["no checkpoint", "tune again"]),
    ("edit-interrupted-run", lambda c: c.edit(run=c.interrupted), ["--resume"]),
    ("edit-no-run", lambda c: c.edit(run=c.dir / "no-run"), ["no-run"]),
    ("demo-steps-zero", lambda c: ["demo", "--output", str(c.dir / "demo"), "--steps", "0"], ["--steps 0"]),
    ("demo-train-steps-zero", lambda c: ["demo", "--output", str(c.dir / "demo"), "--train-steps", "0"], ["--train-steps 0"]),
    # a run folder is not a pipeline: the demo needs a whole base model
    ("demo-model-not-a-pipeline", lambda c: ["demo", "--output", str(c.dir / "demo"), "--model", str(c.finished)],
     ["--model", "model_index.json"]),
    # a folder that claims to be a pipeline and is not: the error comes before any output
    ("demo-model-incomplete", lambda c: (c.file("broken/model_index.json", b"{}"),
                                         ["demo", "--output", str(c.dir / "demo"), "--model", str(c.dir / "broken")])[1],
     ["unet/config.json"]),
]


def error_line(err: str) -> str:
    """The one ``error:`` line of a failed command's stderr (beside progress bars), with no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file (with a hash of its bytes) and folder below ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("make_argv, words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input(shared, tmp_path, capsys, make_argv, words):
    ctx = Ctx(tmp_path, shared)
    argv = make_argv(ctx)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    line = error_line(err)
    for word in words:
        assert word in line, line
    assert snapshot(tmp_path) == before, "a failed command changed files"


def test_diverged_tuning_stops_and_keeps_the_last_good_checkpoint(shared, tmp_path, capsys):
    ctx = Ctx(tmp_path, shared)
    # no checkpoint yet: nothing is left behind
    assert main(ctx.tune("--learning-rate", "1e30", "--train-steps", "3")) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith("error: tuning diverged at step") and "nothing was kept" in line, line
    assert not (tmp_path / "out").exists()
    # a checkpoint after every step: the last one before the non-finite values stays, nothing else is written
    assert main(ctx.tune("--learning-rate", "1e30", "--train-steps", "3", "--checkpoint-every", "1")) == 2
    line = error_line(capsys.readouterr().err)
    assert "is kept: resume it with --resume" in line, line
    run = tmp_path / "out"
    assert not (run / ADAPTER).exists() and not (run / INVERSION).exists()
    kept = list((run / "checkpoints").glob("step-*.pt"))
    assert len(kept) == 1
    state = torch.load(kept[0], weights_only=True)
    assert all(t.isfinite().all() for t in state["trainable"].values())
    assert f"step {state['step']} is kept" in line


def test_resume_takes_more_steps_and_logs_each_step_once(shared, tmp_path, capsys):
    ctx = Ctx(tmp_path, shared)
    run = ctx.interrupted
    with open(run / LOG, "a") as log:  # a step logged before an interruption came before its checkpoint
        log.write('{"step": 2, "loss": 0.5, "seconds": 0.1}\n')
    assert main(["tune", "--output", str(run), "--resume", "--train-steps", "4", "--learning-rate", "2e-4"]) == 0, capsys.readouterr().err
    saved = RunConfig.load(run / CONFIG)
    assert (saved.tune.steps, saved.tune.learning_rate) == (4, 2e-4)
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (run / LOG).read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert (run / ADAPTER).exists() and (run / INVERSION).exists() and (run / SOURCE).exists()
    assert not list((run / "checkpoints").glob("*.pt"))


KILLED_STEPS = 60  # long enough that a kill after the first checkpoint lands well before the last step


def test_a_killed_tuning_process_resumes_to_the_weights_of_an_uninterrupted_run(shared, tmp_path, capsys):
    """SIGKILL mid-run (no Python handler runs: no cleanup, a log line past the checkpoint, maybe a half-written
    checkpoint), then --resume in-process: the same adapter, bit for bit, as a run never stopped."""
    ctx = Ctx(tmp_path, shared)
    steps = ("--train-steps", str(KILLED_STEPS), "--checkpoint-every", "1")
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # as the in-process runs (conftest)
    with open(tmp_path / "killed.out", "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "tuneavideo.cli", *ctx.tune(*steps, out=run.name)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 120
            while not list((run / CHECKPOINTS).glob("step-*.pt")):
                assert process.poll() is None, f"tune ended before its first checkpoint:\n{(tmp_path / 'killed.out').read_text()}"
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.005)
            os.kill(process.pid, signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (run / ADAPTER).exists(), "the kill came after the run finished: nothing was interrupted"
    capsys.readouterr()

    assert main(["tune", "--resume", "--output", str(run)]) == 0, capsys.readouterr().err
    resumed_from = capsys.readouterr().out
    assert "resuming" in resumed_from and "from step 0" not in resumed_from, resumed_from
    assert main(ctx.tune(*steps, out="straight")) == 0, capsys.readouterr().err

    killed, straight = load_file(run / ADAPTER), load_file(tmp_path / "straight" / ADAPTER)
    assert killed.keys() == straight.keys()
    differ = [name for name in straight if not torch.equal(killed[name], straight[name])]
    assert not differ, f"{len(differ)} of {len(straight)} tuned tensors differ from the uninterrupted run's: {differ[:3]}"
    assert not list(run.rglob("*.tmp")), "a temporary file of the killed process survived the resume"
    assert not list((run / CHECKPOINTS).glob("*.pt"))
    logged = [json.loads(line)["step"] for line in (run / LOG).read_text().splitlines()]
    assert logged == list(range(1, KILLED_STEPS + 1)), logged


def test_a_long_prompt_is_cut_with_a_warning(shared, tmp_path, caplog):
    assert main(["edit", str(shared["finished"]), "--prompt", LONG, "--steps", "1", "--no-inversion",
                 "--output", str(tmp_path / "edits")]) == 0
    assert "warning: the prompt 'a white square a white square a white sq...' has 122 tokens; the text encoder reads the first 77" \
        in caplog.text, caplog.text
    assert "indexing errors" not in caplog.text


def test_a_full_disk_leaves_no_partial_files(shared, tmp_path, capsys, monkeypatch):
    """A checkpoint write that runs out of space: one error line, no temporary file, and a new run leaves no folder."""
    def full_disk(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(torch, "save", full_disk)
    ctx = Ctx(tmp_path, shared)
    assert main(ctx.tune("--train-steps", "2", "--checkpoint-every", "1")) == 2
    line = error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "step-1.pt.tmp" in line, line
    assert not (tmp_path / "out").exists()
    run = ctx.interrupted  # a resumed run keeps its folder: its checkpoint stays, the partial one goes
    before = snapshot(run)
    assert main(resume(ctx, "--checkpoint-every", "1")) == 2
    assert "No space left on device" in error_line(capsys.readouterr().err)
    assert not list(run.rglob("*.tmp")) and snapshot(run)["checkpoints/step-1.pt"] == before["checkpoints/step-1.pt"]


def test_a_number_yaml_reads_as_text_is_taken_as_the_number():
    from tuneavideo.config import RunConfig

    # YAML 1.1 reads 3e-5 (no dot) as the text "3e-5"; a float setting takes it as the number
    config = RunConfig.from_dict(yaml.safe_load("tune:\n  learning_rate: 3e-5\n"))
    assert config.tune.learning_rate == 3e-5 and isinstance(config.tune.learning_rate, float)
