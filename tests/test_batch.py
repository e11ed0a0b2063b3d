"""tuneavideo batch: a manifest of toy-world jobs on a local Ray instance and on local worker processes, checked
against the same jobs tuned one by one; a killed worker; a rerun that does nothing; a bad manifest."""

import copy
import os

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tuneavideo.batch import CRASH_ENV, load_manifest, run_batch
from tuneavideo.cli import main
from tuneavideo.demo import TOY_MODEL
from tuneavideo.runfolder import ADAPTER, ATTEMPTS, EDITS
from tuneavideo.toyworld import Clip, clip_caption, render_clip, with_attributes
from tuneavideo.tuning import tune
from tuneavideo.video import write_video

CLIPS = (
    Clip(shape="circle", colour="red", size="large", background="blue sky", path="right", num_frames=4),
    Clip(shape="square", colour="yellow", size="large", background="green grass", path="left", num_frames=4),
    Clip(shape="cross", colour="purple", size="large", background="white snow", path="up", num_frames=4),
)
DEFAULTS = {
    "video": {"num_frames": 4, "width": 32, "height": 32},
    "tune": {"base_model": str(TOY_MODEL), "steps": 2, "checkpoint_every": 1, "gradient_checkpointing": False,
             "learning_rate": 1e-4},
    "sample": {"num_inference_steps": 2, "num_inversion_steps": 2, "guidance_scale": 7.5},
}


def write_manifest(folder, defaults=DEFAULTS):
    jobs = []
    for index, clip in enumerate(CLIPS):
        frames = torch.from_numpy(render_clip(clip, size=32)).permute(0, 3, 1, 2).float() / 255  # (f, 3, h, w)
        write_video(folder / f"clip{index}.mp4", frames, fps=8)
        jobs.append({"video": f"clip{index}.mp4", "prompt": clip_caption(clip),
                     "edits": [clip_caption(with_attributes(clip, colour="green"))]})
    jobs[2]["name"] = "third"
    jobs[2]["settings"] = {"tune": {"seed": 5}}
    path = folder / "jobs.yaml"
    path.write_text(yaml.safe_dump({"defaults": defaults, "jobs": jobs}))
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_manifest(tmp_path_factory.mktemp("manifest"))


@pytest.fixture(scope="module")
def one_by_one(manifest, tmp_path_factory):
    """The adapters of the manifest's jobs, tuned here one after the other with tune()."""
    folder = tmp_path_factory.mktemp("one-by-one")
    adapters = {}
    for job in load_manifest(manifest):
        tune(job.config.tune.base_model, copy.deepcopy(job.config), folder / job.name, device="cpu", progress=False,
             log=lambda message: None)
        adapters[job.name] = load_file(folder / job.name / ADAPTER)
    return adapters


def assert_same_adapters(batch_dir, adapters):
    for name, expected in adapters.items():
        got = load_file(batch_dir / name / ADAPTER)
        assert got.keys() == expected.keys()
        for key in expected:
            assert torch.equal(got[key], expected[key]), (name, key)


def test_ray_batch_matches_one_by_one_and_survives_a_killed_worker(manifest, one_by_one, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'tuneavideo[ray]'")
    marker = tmp_path / "crashed"
    # the workers' environment: one thread (as the jobs tuned one by one here), and the crash hook of the batch module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {CRASH_ENV: str(marker), "OMP_NUM_THREADS": "1"}})
    lines = []
    try:
        result = run_batch(load_manifest(manifest), tmp_path / "batch", ray_address="local", retries=2, log=lines.append)
    finally:
        ray.shutdown()
    assert marker.exists(), f"no worker was killed: the test checked nothing; {lines}"
    assert [o.status for o in result.outcomes] == ["done"] * 3, lines
    retried = [o for o in result.outcomes if o.attempts == 2]
    assert len(retried) == 1 and "after 1 worker death" in "\n".join(lines)
    assert "resumed" in retried[0].reason  # it continued from its checkpoint
    assert_same_adapters(tmp_path / "batch", one_by_one)
    for name in one_by_one:
        assert len(list((tmp_path / "batch" / name / EDITS).glob("*.mp4"))) == 2  # the edit and side-by-side


def test_local_batch_then_a_rerun_does_no_work(manifest, one_by_one, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the worker process's threads, as the jobs tuned one by one here
    out = tmp_path / "batch"
    assert main(["batch", str(manifest), "--output", str(out)]) == 0
    first = capsys.readouterr().out
    assert "batch: 3 done, 0 skipped, 0 failed" in first
    assert_same_adapters(out, one_by_one)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["batch", str(manifest), "--output", str(out)]) == 0
    again = capsys.readouterr().out
    assert "batch: 0 done, 3 skipped, 0 failed" in again and again.count("skipped (finished)") == 3
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_a_job_whose_folder_was_tuned_otherwise_fails_with_its_reason(manifest, tmp_path):
    out = tmp_path / "batch"
    (out / "third").mkdir(parents=True)
    jobs = load_manifest(manifest)
    other = copy.deepcopy(jobs[2].config)
    other.tune.seed = 6
    other.save(out / "third" / "config.yaml")
    lines = []
    result = run_batch([jobs[2]], out, log=lines.append)
    assert [o.status for o in result.outcomes] == ["failed"]
    assert result.outcomes[0].reason.startswith("tune.seed is 5 but its run folder was tuned with 6")
    assert (out / ATTEMPTS / "third.json").is_file() and not (out / "third" / ADAPTER).exists()


@pytest.mark.parametrize("change, message", [
    (lambda m: m["jobs"][1].update(video="missing.mp4"), "job 2"),
    (lambda m: m["defaults"]["video"].update(resize="stretch"), "resize 'stretch' is unknown"),
    (lambda m: m["jobs"][0].update(edits=[]), "edits must be a list"),
    (lambda m: m["jobs"][0].update(name="third"), "both named 'third'"),
    (lambda m: m["jobs"][2].update(settings={"tune": {"steps": 0}}), "job 3 (third)"),
    (lambda m: m.update(extra=1), "unknown key 'extra'"),
    (lambda m: m["jobs"][0].update(prompts=["x"]), "unknown key 'prompts'"),
])
def test_a_bad_manifest_is_one_error_line_before_any_work(manifest, tmp_path, capsys, change, message):
    data = yaml.safe_load(manifest.read_text())
    change(data)
    bad = manifest.parent / f"bad-{os.getpid()}-{abs(hash(message))}.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["batch", str(bad), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()
