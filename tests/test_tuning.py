"""Tuning: the trainable set, gradients with and without checkpointing, frozen weights, resume, adapters."""

from dataclasses import replace

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file
from tiny import SD_SCHEDULER, tiny_text_encoder, tiny_tokenizer, tiny_unet, tiny_vae

from tuneavideo.adapter import AdapterError, load_adapter, set_trainable, trainable_names
from tuneavideo.config import DEFAULT_TRAINABLE, RunConfig
from tuneavideo.loading import BaseModel
from tuneavideo.models import TuneAVideoUNet
from tuneavideo.runfolder import ADAPTER, INVERSION, RunError
from tuneavideo.tuning import apply_profile, tune
from tuneavideo.video import write_video


def tiny_base(seed=0) -> BaseModel:
    return BaseModel(
        vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed), tokenizer=tiny_tokenizer(), unet=tiny_unet(seed),
        scheduler_config=dict(SD_SCHEDULER, _class_name="PNDMScheduler"), source="tiny",
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A synthetic 6-frame clip: a bright square moving right."""
    frames = torch.zeros(6, 3, 32, 32)
    for i in range(6):
        frames[i, :, 10:18, 2 + 4 * i:10 + 4 * i] = 1.0
    path = tmp_path_factory.mktemp("clip") / "square.mp4"
    write_video(path, frames, fps=8)
    return path


def run_config(clip, steps=3, **tune) -> RunConfig:
    config = RunConfig()
    config.video.path, config.video.prompt = str(clip), "a white square moving right"
    config.video.num_frames, config.video.width, config.video.height = 4, 32, 32
    config.tune.steps, config.tune.gradient_checkpointing, config.tune.checkpoint_every = steps, False, 0
    config.sample.num_inversion_steps = 5
    for key, value in tune.items():
        setattr(config.tune, key, value)
    return config


def test_trainable_set_is_the_declared_patterns():
    video = TuneAVideoUNet.from_unet2d(tiny_unet())
    names = set_trainable(video, DEFAULT_TRAINABLE)
    expected = {
        n for n, _ in video.named_parameters()
        if ".attn1.to_q." in n or ".attn2.to_q." in n or ".attn_temp." in n
    }
    assert set(names) == expected
    assert {n for n, p in video.named_parameters() if p.requires_grad} == expected
    # Four transformer blocks (1 down, 1 mid, 2 up), each: attn1.to_q and attn2.to_q weights, attn_temp
    # to_q, to_k, to_v weights and to_out weight and bias.
    assert len(names) == 4 * (1 + 1 + 5)
    assert trainable_names(video, ("attn_temp",)) == sorted(n for n in expected if "attn_temp" in n)


@pytest.mark.parametrize("checkpointing", ["off", "diffusers", "default", "low-memory"])
def test_every_trainable_tensor_gets_a_gradient(checkpointing):
    video = TuneAVideoUNet.from_unet2d(tiny_unet())
    names = set_trainable(video, DEFAULT_TRAINABLE)
    if checkpointing == "diffusers":
        video.enable_gradient_checkpointing()
    elif checkpointing != "off":
        assert apply_profile(video, checkpointing)  # it checkpointed something
    video.train()
    params = dict(video.named_parameters())
    optimizer = torch.optim.AdamW([params[n] for n in names], lr=1e-3)
    scheduler = DDPMScheduler.from_config(SD_SCHEDULER)
    torch.manual_seed(0)
    latents, context = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 7, 32)
    for step in range(2):  # attn_temp q/k/v get exactly zero at step 1: to_out starts at zero
        noise = torch.randn_like(latents)
        t = torch.tensor([500])
        loss = torch.nn.functional.mse_loss(video(scheduler.add_noise(latents, noise, t), t, context).sample, noise)
        loss.backward()
        if step == 0:
            optimizer.step()
            optimizer.zero_grad()
    no_grad = [n for n in names if params[n].grad is None or params[n].grad.abs().max() == 0]
    assert not no_grad, f"{len(no_grad)} of {len(names)} trainable tensors got no gradient: {no_grad[:3]}"
    frozen_with_grad = [n for n, p in params.items() if n not in names and p.grad is not None]
    assert not frozen_with_grad


def test_tuning_trains_only_the_trainable_tensors(clip, tmp_path):
    base = tiny_base()
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    vae_before = {k: v.clone() for k, v in base.vae.state_dict().items()}
    config = run_config(clip, steps=3, learning_rate=1e-3)
    result = tune(base, config, tmp_path / "run", progress=False, log=lambda s: None)
    adapter = load_file(tmp_path / "run" / ADAPTER)
    assert set(adapter) == set(result.trainable)
    video = TuneAVideoUNet.from_unet2d(tiny_unet())
    load_adapter(video, tmp_path / "run" / ADAPTER)
    state = video.state_dict()
    for name, tensor in before.items():  # the image weights: trained ones moved, frozen ones bit-identical
        if name in adapter:
            assert not torch.equal(state[name], tensor), name
        else:
            assert torch.equal(state[name], tensor), name
    assert all(torch.equal(v, vae_before[k]) for k, v in base.vae.state_dict().items())
    assert load_file(tmp_path / "run" / INVERSION)["latents"].shape == (1, 4, 4, 4, 4)
    assert len(result.losses) == 3


def test_resume_gives_the_same_weights(clip, tmp_path):
    config = run_config(clip, steps=4, learning_rate=1e-3, checkpoint_every=2)
    tune(tiny_base(), config, tmp_path / "whole", progress=False)
    tune(tiny_base(), config, tmp_path / "split", progress=False, stop_after=3)
    assert not (tmp_path / "split" / ADAPTER).exists()
    with pytest.raises(RunError, match="--resume"):
        tune(tiny_base(), config, tmp_path / "split", progress=False)
    tune(tiny_base(), config, tmp_path / "split", progress=False, resume=True, log=lambda s: None)
    whole, split = load_file(tmp_path / "whole" / ADAPTER), load_file(tmp_path / "split" / ADAPTER)
    assert whole.keys() == split.keys()
    for key in whole:
        assert torch.equal(whole[key], split[key]), key
    assert not list((tmp_path / "split" / "checkpoints").glob("*.pt"))


def test_should_stop_ends_tuning_with_a_resumable_checkpoint(clip, tmp_path):
    """A stop asked for after step 2 (checkpoints every 3 steps) ends the loop there with a checkpoint of step 2 and no
    adapter; resuming gives the uninterrupted run's weights."""
    config = run_config(clip, steps=4, learning_rate=1e-3, checkpoint_every=3)
    tune(tiny_base(), config, tmp_path / "whole", progress=False)
    asked = []
    result = tune(tiny_base(), config, tmp_path / "stopped", progress=False,
                  should_stop=lambda: asked.append(True) or len(asked) >= 2)
    assert len(result.losses) == 2 and len(asked) == 2
    assert not (tmp_path / "stopped" / ADAPTER).exists()
    assert [p.name for p in (tmp_path / "stopped" / "checkpoints").iterdir()] == ["step-2.pt"]
    tune(tiny_base(), config, tmp_path / "stopped", progress=False, resume=True, log=lambda s: None)
    whole, stopped = load_file(tmp_path / "whole" / ADAPTER), load_file(tmp_path / "stopped" / ADAPTER)
    assert all(torch.equal(whole[key], stopped[key]) for key in whole)
    assert len((tmp_path / "stopped" / "train.log").read_text().splitlines()) == 4


def test_gradient_checkpointing_gives_the_same_step(clip, tmp_path):
    plain = tune(tiny_base(), run_config(clip, steps=2), tmp_path / "a", progress=False)
    ckpt = tune(tiny_base(), run_config(clip, steps=2, gradient_checkpointing=True), tmp_path / "b", progress=False)
    assert plain.losses == pytest.approx(ckpt.losses, rel=1e-5)
    a, b = load_file(tmp_path / "a" / ADAPTER), load_file(tmp_path / "b" / ADAPTER)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_adapter_round_trip_and_architecture_mismatch(clip, tmp_path):
    tune(tiny_base(), run_config(clip, steps=1, learning_rate=1e-3), tmp_path / "run", progress=False)
    a = TuneAVideoUNet.from_unet2d(tiny_unet())
    b = TuneAVideoUNet.from_unet2d(tiny_unet())
    load_adapter(a, tmp_path / "run" / ADAPTER)
    load_adapter(b, tmp_path / "run" / ADAPTER)
    x, context = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x, 10, context).sample, b(x, 10, context).sample, rtol=0, atol=0)
        assert not torch.equal(a(x, 10, context).sample, TuneAVideoUNet.from_unet2d(tiny_unet())(x, 10, context).sample)
    other = TuneAVideoUNet.from_unet2d(tiny_unet(block_out_channels=(16, 32)))
    with pytest.raises(AdapterError, match="another architecture"):
        load_adapter(other, tmp_path / "run" / ADAPTER)


def test_validation_samples_during_tuning(clip, tmp_path):
    config = run_config(clip, steps=2, validation_every=2)
    config.sample.prompts = ["a white square moving left"]
    config.sample.num_inference_steps = 2
    tune(tiny_base(), config, tmp_path / "run", progress=False)
    samples = list((tmp_path / "run" / "samples" / "step-2").glob("*.gif"))
    assert [p.name for p in samples] == ["00-a-white-square-moving-left.gif"]


def test_frame_norms_ablation_reaches_the_loaded_run(clip, tmp_path):
    """``frame_norms="per-frame"`` is saved with the run and comes back with it: the reloaded UNet is the inflated
    image UNet with the run's adapter, per-frame attention and per-frame GroupNorm statistics, built by hand here;
    with the method's pooled statistics it differs."""
    from tuneavideo.cli import build_parser
    from tuneavideo.config import ConfigError
    from tuneavideo.editing import load_run

    config = run_config(clip, steps=1, learning_rate=1e-3, frame_attention="per-frame", frame_norms="per-frame")
    tune(tiny_base(), config, tmp_path / "run", progress=False)
    unet = load_run(tmp_path / "run", base_model=tiny_base()).pipe.unet
    by_hand = TuneAVideoUNet.from_unet2d(tiny_unet())
    load_adapter(by_hand, tmp_path / "run" / ADAPTER)
    by_hand.set_frame_attention("per-frame")
    by_hand.pool_norm_over_frames = False
    torch.manual_seed(3)
    x, context = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 7, 32)
    with torch.no_grad():
        out = unet(x, 10, context).sample
        torch.testing.assert_close(out, by_hand(x, 10, context).sample, atol=1e-6, rtol=1e-5)
        by_hand.pool_norm_over_frames = True
        assert not torch.allclose(by_hand(x, 10, context).sample, out, atol=1e-4)
    assert build_parser().parse_args(["tune", "--frame-norms", "per-frame"]).frame_norms == "per-frame"
    config.tune.frame_norms = "frame"
    with pytest.raises(ConfigError, match="frame_norms 'frame' is unknown"):
        config.validate()


def test_same_seed_same_weights_whatever_the_global_generator(clip, tmp_path):
    """The tuning seed alone fixes the result: the new temporal layers' random initial weights come from it, not
    from torch's global generator (drawn from here between the runs); another seed gives other weights."""
    def tuned(name, seed, draws):
        base = tiny_base()  # (seeds the global generator while it builds the tiny models)
        torch.rand(draws)  # then moves it by a different amount for each run
        tune(base, run_config(clip, steps=2, learning_rate=1e-3, seed=seed), tmp_path / name, progress=False)
        return load_file(tmp_path / name / ADAPTER)

    first = tuned("a", 7, 1)
    second = tuned("b", 7, 1000)
    other = tuned("c", 8, 1)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)
    assert any(not torch.equal(first[name], other[name]) for name in first if "attn_temp.to_q" in name)


def test_ddim_scheduler_is_built_as_the_reference_builds_it():
    """clip_sample=False and steps_offset=1 whatever the base's scheduler config says, with a note when it differs."""
    from tuneavideo.tuning import build_pipeline

    base = tiny_base()
    notes = []
    pipe = build_pipeline(base, TuneAVideoUNet.from_unet2d(base.unet), log=notes.append)
    assert (pipe.scheduler.config.clip_sample, pipe.scheduler.config.steps_offset) == (False, 1) and not notes
    base.scheduler_config = {k: v for k, v in base.scheduler_config.items() if k not in ("clip_sample", "steps_offset")}
    pipe = build_pipeline(base, TuneAVideoUNet.from_unet2d(base.unet), log=notes.append)
    assert (pipe.scheduler.config.clip_sample, pipe.scheduler.config.steps_offset) == (False, 1)
    assert len(notes) == 1 and "clip_sample=False (the base's config: unset)" in notes[0] and "steps_offset=1" in notes[0]


def base_state(base: BaseModel) -> dict:
    """Everything about a base that tuning or editing could change: each tensor's values, dtype, device and
    requires_grad, each module's class and training flag, and the scheduler config."""
    state = {"scheduler": repr(base.scheduler_config)}
    for part in ("vae", "text_encoder", "unet"):
        module = getattr(base, part)
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            state[f"{part}.{name}"] = (tensor.detach().clone(), tensor.dtype, tensor.device, tensor.requires_grad)
        state[part] = [(name, type(m).__name__, m.training) for name, m in module.named_modules()]
    return state


def assert_same_state(after: dict, before: dict) -> None:
    assert after.keys() == before.keys()
    for key, old in before.items():
        new = after[key]
        if isinstance(old, tuple):
            assert new[1:] == old[1:] and torch.equal(new[0], old[0]), key
        else:
            assert new == old, key


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_tune_and_load_run_leave_the_base_unchanged(clip, tmp_path, precision):
    """One loaded base serves a run and its edits: tuning (its trained tensors start from the base's weights, its
    frozen ones are cast) and loading the run for editing change none of the base's tensors, dtypes, devices,
    flags or module classes."""
    from tuneavideo.editing import load_run

    base = tiny_base()
    before = base_state(base)
    config = run_config(clip, steps=2, learning_rate=1e-2, gradient_checkpointing=True, mixed_precision=precision)
    tune(base, config, tmp_path / "run", progress=False, log=lambda s: None)
    assert_same_state(base_state(base), before)
    tuned = load_run(tmp_path / "run", base_model=base, mixed_precision=precision)
    assert_same_state(base_state(base), before)
    # the tuned UNet did change: the adapter's tensors are in it, not in the base
    adapter = load_file(tmp_path / "run" / ADAPTER)
    name = next(n for n in adapter if "attn1.to_q" in n)
    assert not torch.equal(dict(tuned.pipe.unet.named_parameters())[name].float(), before[f"unet.{name}"][0])


def test_edit_inverts_again_from_the_latents_tuning_used(clip, tmp_path):
    """An edit with other inversion steps inverts the source latents tuning encoded (kept in the run folder), not
    the lossy source.mp4: the result is the inversion of the clip's own frames, even with source.mp4 gone."""
    from tuneavideo.editing import load_run
    from tuneavideo.inversion import ddim_invert
    from tuneavideo.runfolder import SOURCE
    from tuneavideo.video import read_video

    config = run_config(clip, steps=2, learning_rate=1e-3)
    tune(tiny_base(), config, tmp_path / "run", progress=False, log=lambda s: None)
    (tmp_path / "run" / SOURCE).unlink()
    tuned = load_run(tmp_path / "run", base_model=tiny_base())
    vc = config.video
    frames = read_video(clip, num_frames=vc.num_frames, width=vc.width, height=vc.height)  # what tuning read
    mean, _ = tuned.pipe.encode_video(frames)
    torch.testing.assert_close(load_file(tmp_path / "run" / INVERSION)["source_latents"], mean)
    empty = tuned.pipe.encode_prompt([""])
    expected = ddim_invert(tuned.pipe.unet, tuned.pipe.scheduler, mean, empty, 2)
    sample = replace(config.sample, num_inversion_steps=2, num_inference_steps=1)
    tuned.sample("a white square moving left", sample, progress=False)
    assert tuned.inversion_steps == 2
    torch.testing.assert_close(tuned.inverted, expected, atol=1e-5, rtol=1e-5)
    # what re-encoding the H.264 source would have given: another inversion
    write_video(tmp_path / "source.mp4", frames, fps=8)
    lossy, _ = tuned.pipe.encode_video(read_video(tmp_path / "source.mp4", num_frames=vc.num_frames, width=vc.width, height=vc.height))
    assert not torch.allclose(ddim_invert(tuned.pipe.unet, tuned.pipe.scheduler, lossy, empty, 2), expected, atol=1e-4)


def test_edit_with_another_base_inverts_again_and_caches_it(clip, tmp_path, capsys):
    """The stored inversion belongs to the tuning base: an edit on another base (a DreamBooth model: same VAE and text
    encoder, other UNet) inverts the stored source latents again with that base, says so, and keeps the result in
    the run folder for the next edit; the tuning base still gets the stored inversion."""
    from tuneavideo.editing import load_run
    from tuneavideo.inversion import ddim_invert
    from tuneavideo.runfolder import INVERSIONS

    def dreambooth():
        return BaseModel(vae=tiny_vae(0), text_encoder=tiny_text_encoder(0), tokenizer=tiny_tokenizer(), unet=tiny_unet(1),
                         scheduler_config=dict(SD_SCHEDULER, _class_name="PNDMScheduler"), source="dreambooth")

    config = run_config(clip, steps=2, learning_rate=1e-3)
    run = tmp_path / "run"
    tune(tiny_base(), config, run, progress=False, log=lambda s: None)
    stored = load_file(run / INVERSION)
    assert torch.equal(load_run(run, base_model=tiny_base()).inverted, stored["latents"])
    assert "another base" not in capsys.readouterr().err

    tuned = load_run(run, base_model=dreambooth())
    assert tuned.inverted is None
    assert "inversion.safetensors was computed with another base model than dreambooth" in capsys.readouterr().err
    sample = replace(config.sample, num_inference_steps=1)
    tuned.sample("a white square moving left", sample, progress=False)
    expected = ddim_invert(tuned.pipe.unet, tuned.pipe.scheduler, stored["source_latents"], tuned.pipe.encode_prompt([""]),
                           config.sample.num_inversion_steps)
    torch.testing.assert_close(tuned.inverted, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tuned.inverted, stored["latents"], atol=1e-3)
    assert len(list((run / INVERSIONS).glob("*.safetensors"))) == 1

    again = load_run(run, base_model=dreambooth())
    again.source = again.source_latents = None  # nothing left to invert: the cached inversion must serve
    again.sample("a white square moving left", sample, progress=False)
    torch.testing.assert_close(again.inverted, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(load_file(run / INVERSION)["latents"], stored["latents"])  # the run's own is kept
    other_vae = BaseModel(**{**dreambooth().__dict__, "vae": tiny_vae(1)})
    assert load_run(run, base_model=other_vae).source_latents is None  # another VAE: the source is encoded again
