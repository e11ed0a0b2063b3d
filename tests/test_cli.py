"""The command line end to end on a tiny real model folder and a real H.264 clip, and its errors."""

import json
import shutil

import pytest
import torch
from conftest import CONFIGS, VIDEOS, need_shared
from tiny import reference_config, save_tiny_sd, tiny_unet

from tuneavideo.cli import main
from tuneavideo.config import RunConfig
from tuneavideo.models import TuneAVideoUNet
from tuneavideo.video import probe_video, read_video

SMALL = ["--num-frames", "4", "--width", "32", "--height", "32", "--stride", "2", "--train-steps", "2",
         "--inversion-steps", "3", "--no-gradient-checkpointing", "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return save_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def skiing():
    return need_shared(VIDEOS / "man-skiing.mp4")


@pytest.fixture(scope="module")
def tuned_run(tiny_sd, skiing, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "skiing"
    code = main(["tune", "--base-model", str(tiny_sd), "--video", str(skiing), "--prompt", "a man is skiing",
                 "--output", str(run), *SMALL])
    assert code == 0
    return run


def test_tune_writes_the_run_folder(tuned_run):
    names = {p.name for p in tuned_run.iterdir()}
    assert {"config.yaml", "adapter.safetensors", "inversion.safetensors", "source.mp4", "train.log"} <= names
    config = RunConfig.load(tuned_run / "config.yaml")
    assert (config.video.num_frames, config.video.width, config.video.stride) == (4, 32, 2)
    assert len((tuned_run / "train.log").read_text().splitlines()) == 2
    source = probe_video(tuned_run / "source.mp4")
    assert (source.num_frames, source.width, source.height) == (4, 32, 32)


def test_edit_two_prompts(tuned_run, tmp_path):
    out = tmp_path / "edits"
    code = main(["edit", str(tuned_run), "--prompt", "spider man is skiing on the beach", "--prompt",
                 "a man, wearing pink clothes, is skiing at sunset", "--steps", "3", "--output", str(out)])
    assert code == 0
    mp4s = sorted(out.glob("*.mp4"))
    assert len(mp4s) == 3 and len(list(out.glob("*.gif"))) == 2
    for path in mp4s:
        info = probe_video(path)
        assert info.num_frames == 4 and info.height == 32
    side = probe_video(out / "side-by-side.mp4")
    assert side.width >= 3 * 32  # source | edit | edit
    record = json.loads((out / "spider-man-is-skiing-on-the-beach.json").read_text())
    assert record["prompt"] == "spider man is skiing on the beach"
    assert record["num_inference_steps"] == 3 and record["guidance_scale"] == 12.5 and record["use_inversion"]
    gif = read_video(out / "spider-man-is-skiing-on-the-beach.gif", num_frames=4, width=32, height=32)
    assert gif.shape == (4, 3, 32, 32)


def test_edit_twice_keeps_earlier_outputs(tuned_run, tmp_path):
    for _ in range(2):
        assert main(["edit", str(tuned_run), "--prompt", "a cat", "--steps", "2", "--no-inversion", "--output", str(tmp_path)]) == 0
    assert (tmp_path / "a-cat.mp4").exists() and (tmp_path / "a-cat-2.mp4").exists()


def test_reference_configs_load_unchanged():
    for name in ("man-skiing", "man-surfing", "car-turn", "rabbit-watermelon"):
        config = RunConfig.load(need_shared(CONFIGS / f"{name}.yaml"))
        assert config.video.num_frames == 24 and config.video.width == 512
        assert config.tune.steps == 500 and config.tune.learning_rate == 3e-5 and config.tune.seed == 33
        assert config.sample.guidance_scale == 12.5 and len(config.sample.prompts) >= 3
    skiing = RunConfig.load(CONFIGS / "man-skiing.yaml")
    assert skiing.video.prompt == "a man is skiing" and skiing.video.stride == 2
    assert RunConfig.load(CONFIGS / "man-surfing.yaml").video.stride == 1


def test_tune_from_a_reference_config_with_overrides(tiny_sd, skiing, tmp_path):
    run = tmp_path / "run"
    code = main(["tune", "--config", str(need_shared(CONFIGS / "man-skiing.yaml")), "--base-model", str(tiny_sd),
                 "--video", str(skiing), "--output", str(run), "--validation-every", "0", *SMALL])
    assert code == 0
    config = RunConfig.load(run / "config.yaml")
    assert config.video.prompt == "a man is skiing" and config.tune.steps == 2
    assert config.sample.prompts[0] == "mickey mouse is skiing on the snow"


def reference_folder(tiny_sd, folder):
    """A pipeline folder as the reference saves it (its inflated unet/ with 3-D block names), with inverted latents."""
    shutil.copytree(tiny_sd, folder)
    image = tiny_unet()
    video = TuneAVideoUNet.from_unet2d(image)
    shutil.rmtree(folder / "unet")
    (folder / "unet").mkdir()
    (folder / "unet" / "config.json").write_text(json.dumps(reference_config(image)))
    torch.save(video.state_dict(), folder / "unet" / "diffusion_pytorch_model.bin")
    (folder / "inv_latents").mkdir()
    torch.save(torch.randn(1, 4, 3, 4, 4), folder / "inv_latents" / "ddim_latent-500.pt")
    return folder


def test_edit_a_reference_pipeline_folder(tiny_sd, tmp_path):
    folder = reference_folder(tiny_sd, tmp_path / "reference-output")
    code = main(["edit", str(folder), "--inv-latents", str(folder / "inv_latents" / "ddim_latent-500.pt"),
                 "--prompt", "a man is skiing", "--steps", "2"])
    assert code == 0
    assert probe_video(folder / "edits" / "a-man-is-skiing.mp4").num_frames == 3


def fails(capsys, argv, *words):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and err.splitlines()[-1].startswith("error: "), err
    err = errors[0]
    for word in words:
        assert word in err, err
    return err


def test_bad_inputs(tiny_sd, skiing, tuned_run, tmp_path, capsys, monkeypatch):
    def tune(*extra, video=skiing, base=tiny_sd, out="bad"):
        return ["tune", "--base-model", str(base), "--video", str(video), "--prompt", "a man is skiing",
                "--output", str(tmp_path / out), *SMALL, *extra]

    fails(capsys, tune(video=tmp_path / "missing.mp4"), "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    fails(capsys, tune(video=text), "notes.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(skiing.read_bytes()[: skiing.stat().st_size // 2])
    fails(capsys, tune("--num-frames", "40", video=truncated), "truncated.mp4")
    fails(capsys, tune("--num-frames", "60"), "91 frames")
    fails(capsys, tune("--width", "60"), "multiple of 8")
    fails(capsys, tune(base=tmp_path / "no-such-model"), "no-such-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fails(capsys, tune(base="nobody/no-such-model"), "nobody/no-such-model")
    assert not (tmp_path / "bad" / "adapter.safetensors").exists()

    other = save_tiny_sd(tmp_path / "other-sd", block_out_channels=(16, 32))  # another architecture
    fails(capsys, ["edit", str(tuned_run), "--base-model", str(other), "--prompt", "a cat", "--output", str(tmp_path / "e1")], "architecture")
    fails(capsys, ["edit", str(tuned_run), "--output", str(tmp_path / "e2")], "--prompt")
    fails(capsys, ["edit", str(tmp_path / "no-run"), "--prompt", "a cat"], "no-run")
    assert not list(tmp_path.glob("e*/*.mp4"))


def test_edit_with_other_inversion_steps_inverts_again(tuned_run, tmp_path):
    from tuneavideo.editing import load_run

    tuned = load_run(tuned_run)
    stored = tuned.inverted.clone()
    assert tuned.inversion_steps == 3
    sample = tuned.config.sample
    sample.num_inference_steps, sample.num_inversion_steps = 2, 2
    tuned.sample("a cat", sample, progress=False)
    assert tuned.inversion_steps == 2 and not torch.equal(tuned.inverted, stored)


def test_edit_without_a_prompt_uses_the_prompts_the_run_holds(tiny_sd, skiing, tmp_path, capsys):
    """A run tuned with validation prompts (a reference config's) is edited with them when no --prompt is given,
    with a note saying so; a run without prompts still asks for --prompt."""
    run = tmp_path / "run"
    assert main(["tune", "--base-model", str(tiny_sd), "--video", str(skiing), "--prompt", "a man is skiing",
                 "--output", str(run), "--validation-prompt", "a cat is skiing", "--validation-prompt", "a dog is skiing",
                 *SMALL]) == 0
    capsys.readouterr()
    assert main(["edit", str(run), "--steps", "1", "--output", str(tmp_path / "edits")]) == 0
    err = capsys.readouterr().err
    assert "no edit prompt given (--prompt); editing with the 2 prompts of the run's config" in err, err
    assert "'a cat is skiing'; 'a dog is skiing'" in err
    assert sorted(p.name for p in (tmp_path / "edits").glob("*.gif")) == ["a-cat-is-skiing.gif", "a-dog-is-skiing.gif"]


def test_reference_config_settings_are_honoured_or_named(tmp_path):
    """The reference's seed reaches sampling, scale_lr scales the learning rate, the validation negative prompt
    and eta are kept, frames are squashed as the reference reads them; what has no counterpart is named in one
    note, and a config with nothing to drop gives none."""
    path = tmp_path / "reference.yaml"
    path.write_text(
        'pretrained_model_path: "./sd"\noutput_dir: "./out"\n'
        'train_data:\n  video_path: "v.mp4"\n  prompt: "a man is skiing"\n  n_sample_frames: 8\n  width: 256\n  height: 256\n'
        'validation_data:\n  prompts: ["a cat"]\n  video_length: 16\n  width: 256\n  height: 256\n'
        '  negative_prompt: "blurry"\n  eta: 0.5\n'
        'learning_rate: 3e-5\nscale_lr: true\ngradient_accumulation_steps: 2\nlr_scheduler: "cosine"\n'
        'lr_warmup_steps: 10\nseed: 7\nenable_xformers_memory_efficient_attention: true\nmy_own_key: 1\n'
    )
    notes = []
    config = RunConfig.load(path, log=notes.append)
    assert (config.tune.seed, config.sample.seed) == (7, 7)
    assert config.tune.learning_rate == pytest.approx(6e-5)
    assert (config.sample.negative_prompt, config.sample.eta, config.video.resize) == ("blurry", 0.5, "squash")
    assert len(notes) == 1 and "\n" not in notes[0], notes
    for name in ("lr_scheduler: 'cosine'", "lr_warmup_steps: 10", "gradient_accumulation_steps: 2",
                 "validation_data.video_length: 16", "my_own_key"):
        assert name in notes[0], notes[0]
    assert "xformers" not in notes[0] and "validation_data.width" not in notes[0]
    notes.clear()
    RunConfig.load(need_shared(CONFIGS / "man-skiing.yaml"), log=notes.append)
    assert not notes


def test_edit_a_reference_folder_reads_the_frames_it_was_tuned_on(tiny_sd, skiing, tuned_run, tmp_path, capsys):
    """With --video, a reference folder's source is read as the reference read it: from --start, every --stride-th
    frame, squashed (its reader's resize), or as its config (--config) says; in a run folder they pick frames of the video
    it was tuned on (tests/test_long_video.py), and a range past its end is an error."""
    from tuneavideo.editing import load_run

    folder = reference_folder(tiny_sd, tmp_path / "reference-output")
    expected = read_video(skiing, num_frames=3, start=2, stride=3, width=32, height=32, resize="squash")
    tuned = load_run(folder, video=str(skiing), num_frames=3, width=32, height=32, start=2, stride=3)
    assert torch.equal(tuned.source, expected)
    config = tmp_path / "reference.yaml"
    config.write_text('pretrained_model_path: "./sd"\ntrain_data:\n  video_path: "data/man-skiing.mp4"\n  prompt: "a man is skiing"\n'
                      '  n_sample_frames: 3\n  width: 32\n  height: 32\n  sample_start_idx: 2\n  sample_frame_rate: 3\n'
                      'validation_data:\n  prompts: ["a cat is skiing"]\n  num_inference_steps: 1\n  num_inv_steps: 1\n')
    tuned = load_run(folder, video=str(skiing), config=RunConfig.load(config))
    assert torch.equal(tuned.source, expected) and tuned.config.sample.prompts == ["a cat is skiing"]
    capsys.readouterr()
    assert main(["edit", str(folder), "--video", str(skiing), "--config", str(config), "--output", str(tmp_path / "edits")]) == 0
    assert "editing with the 1 prompt of the run's config" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "edits").glob("*.gif")] == ["a-cat-is-skiing.gif"]
    fails(capsys, ["edit", str(tuned_run), "--stride", "31", "--prompt", "a cat"], "4 frames at stride 31")
    fails(capsys, ["edit", str(tuned_run), "--config", str(config), "--prompt", "a cat"], "--config", "run folder")
