"""The fast path against the fp32 model, and the performance profiles.

Fast path = what ``tune`` runs on a GPU: frozen weights in bf16, the trained tensors in fp32 (their
master copies), autocast, the default profile's checkpointing. Here on the CPU with CPU autocast and a
tiny inflated UNet; ``benchmarks/gpu_bench.py`` repeats the comparison on the GPU with SD 1.5's
architecture.
"""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tiny import SD_SCHEDULER, tiny_text_encoder, tiny_tokenizer, tiny_unet, tiny_vae

from tuneavideo.adapter import set_trainable
from tuneavideo.cli import build_parser
from tuneavideo.config import DEFAULT_TRAINABLE, PROFILES, ConfigError, RunConfig
from tuneavideo.loading import BaseModel
from tuneavideo.tuning import (
    ADAPTER,
    CHECKPOINT_UNITS,
    PROFILE_LEVELS,
    apply_profile,
    build_pipeline,
    build_video_unet,
    prepare_models,
    tune,
)
from tuneavideo.video import write_video


def tiny_base() -> BaseModel:
    return BaseModel(
        vae=tiny_vae(), text_encoder=tiny_text_encoder(), tokenizer=tiny_tokenizer(), unet=tiny_unet(),
        scheduler_config=dict(SD_SCHEDULER, _class_name="PNDMScheduler"), source="tiny",
    )


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def tuned_looking_pair(base: BaseModel):
    """Two inflated UNets of ``base`` with the same temporal layers, ``attn_temp.to_out`` random (it
    starts at zero, which makes the gradients of attn_temp's q, k, v exactly zero)."""
    reference = build_video_unet(base)
    fast = build_video_unet(base)
    generator = torch.Generator().manual_seed(1)
    named = dict(fast.named_parameters())
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if ".attn_temp.to_out." in name:
                param.data = torch.randn(param.shape, generator=generator) * 0.02
            if ".attn_temp." in name or ".norm_temp." in name:  # new layers: random in each model
                named[name].data = param.detach().clone()
    return reference, fast


def inputs(frames=3, size=8, seed=2):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 4, frames, size, size, generator=generator)
    context = torch.randn(1, 77, 32, generator=generator)
    target = torch.randn(1, 4, frames, size, size, generator=generator)
    return sample, torch.tensor([500]), context, target


def test_fast_path_matches_fp32():
    """bf16 frozen weights + fp32 trained tensors under autocast, with the default profile's
    checkpointing, against the fp32 model on random inputs.

    Tolerances: the output's cosine similarity at least 0.999 (the issue's); each trained tensor's
    gradient cosine at least 0.99, i.e. at most ~14% relative error. bf16 keeps 8 bits of mantissa
    (2^-9 relative rounding per op), and a gradient crosses the ~60 ops of this UNet's forward and
    backward passes; measured here: ~3% relative error at worst, cosine >= 0.999. A wrong path (a
    tensor trained in bf16, a missed gradient, attention in the wrong layout) is far outside that.
    """
    base = tiny_base()
    reference, fast = tuned_looking_pair(base)
    trained_reference = set_trainable(reference, DEFAULT_TRAINABLE)
    trained_fast = set_trainable(fast, DEFAULT_TRAINABLE)
    prepare_models(build_pipeline(base, fast), torch.device("cpu"), torch.bfloat16, trained_fast)
    assert apply_profile(fast, "default")  # some modules are checkpointed
    reference.train()
    fast.train()

    # the same trainable set, in fp32; every frozen weight in bf16
    assert trained_reference == trained_fast
    for name, param in fast.named_parameters():
        assert param.dtype == (torch.float32 if name in trained_fast else torch.bfloat16), name
        assert param.requires_grad == (name in trained_fast)

    sample, t, context, target = inputs()
    out_reference = reference(sample, t, context).sample
    F.mse_loss(out_reference, target).backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_fast = fast(sample.bfloat16(), t, context.bfloat16()).sample
    F.mse_loss(out_fast.float(), target).backward()

    assert cosine(out_reference, out_fast.float()) >= 0.999
    grads_reference = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    grads_fast = {n: p.grad for n, p in fast.named_parameters() if p.grad is not None}
    assert set(grads_reference) == set(grads_fast) == set(trained_fast)
    for name in trained_fast:
        assert grads_fast[name].dtype == torch.float32
        assert cosine(grads_reference[name], grads_fast[name]) >= 0.99, name
    together = cosine(torch.cat([grads_reference[n].flatten() for n in trained_fast]), torch.cat([grads_fast[n].flatten() for n in trained_fast]))
    assert together >= 0.999


def test_profiles_checkpoint_their_levels():
    unet = build_video_unet(tiny_base())
    keys = list(unet.state_dict())
    units = {n for n, m in unet.named_modules() if isinstance(m, CHECKPOINT_UNITS)}
    last_up = f"up_blocks.{len(unet.up_blocks) - 1}."

    default = set(apply_profile(unet, "default"))
    assert default == {n for n in units if n.startswith(("down_blocks.0.", last_up))}
    assert all(isinstance(m, CHECKPOINT_UNITS) for n, m in unet.named_modules() if n in default)
    assert set(apply_profile(unet, "low-memory")) == units  # every level and the mid block
    assert apply_profile(unet, "default", gradient_checkpointing=False) == []
    assert all(type(m).__name__.startswith("Checkpointed") is False for m in unet.modules())  # undone
    assert list(unet.state_dict()) == keys  # parameter names never change
    assert set(PROFILE_LEVELS) == set(PROFILES)
    with pytest.raises(ValueError, match="low-memory"):
        apply_profile(unet, "fastest")


@pytest.mark.parametrize("channels_last", [False, True])
def test_checkpointing_and_channels_last_change_nothing(channels_last):
    """Recomputation runs the same ops: the output and every gradient as without it (fp32; with
    channels-last, convolutions may pick other kernels, so equal up to float rounding)."""
    results = {}
    for profile, checkpointing in (("default", False), ("default", True), ("low-memory", True)):
        base = tiny_base()
        reference, _ = tuned_looking_pair(base)
        names = set_trainable(reference, DEFAULT_TRAINABLE)
        apply_profile(reference, profile, checkpointing, channels_last=channels_last and checkpointing)
        reference.train()
        sample, t, context, target = inputs()
        out = reference(sample, t, context).sample
        F.mse_loss(out, target).backward()
        grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
        assert set(grads) == set(names)  # every trained tensor gets a gradient
        results[(profile, checkpointing)] = (out.detach(), grads)
    out0, grads0 = results[("default", False)]
    rtol, atol = (1e-4, 1e-5) if channels_last else (1e-5, 1e-6)
    for out, grads in results.values():
        torch.testing.assert_close(out, out0, rtol=rtol, atol=atol)
        for name in grads0:
            torch.testing.assert_close(grads[name], grads0[name], rtol=rtol * 10, atol=atol / 10)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = torch.zeros(4, 3, 32, 32)
    for i in range(4):
        frames[i, :, 10:18, 2 + 4 * i:10 + 4 * i] = 1.0
    path = tmp_path_factory.mktemp("clip") / "square.mp4"
    write_video(path, frames, fps=8)
    return path


def test_low_memory_profile_tunes_like_default(clip, tmp_path):
    """Two bf16 tuning steps through ``tune``: the same losses and tuned tensors in every profile."""
    runs = {}
    for name, fields in (("default", {}), ("low-memory", {"profile": "low-memory"}), ("none", {"gradient_checkpointing": False})):
        config = RunConfig()
        config.video.path, config.video.prompt = str(clip), "a white square moving right"
        config.video.num_frames, config.video.width, config.video.height = 4, 32, 32
        config.tune.steps, config.tune.checkpoint_every, config.tune.mixed_precision = 2, 0, "bf16"
        config.tune.learning_rate = 1e-3  # large enough that two steps move the weights visibly
        config.sample.num_inversion_steps = 2
        for key, value in fields.items():
            setattr(config.tune, key, value)
        seen = []
        result = tune(tiny_base(), config, tmp_path / name, device="cpu", progress=False, log=lambda m: None,
                      on_step=lambda step, loss, seconds: seen.append((step, loss)))
        assert [s for s, _ in seen] == [1, 2] and [loss for _, loss in seen] == result.losses
        runs[name] = (result.losses, load_file(tmp_path / name / ADAPTER))
    losses0, adapter0 = runs["default"]
    assert all(tensor.dtype == torch.float32 for tensor in adapter0.values())
    initial = dict(build_video_unet(tiny_base()).named_parameters())
    assert any(not torch.equal(adapter0[n], initial[n].detach()) for n in adapter0 if "attn1.to_q" in n)  # it trained
    for losses, adapter in runs.values():
        assert losses == pytest.approx(losses0, rel=1e-5)
        assert adapter.keys() == adapter0.keys()
        for name in adapter0:
            torch.testing.assert_close(adapter[name], adapter0[name], rtol=1e-5, atol=1e-7)


def test_profile_flags_and_config():
    args = build_parser().parse_args(["tune", "--profile", "low-memory", "--channels-last", "--compile", "--no-gradient-checkpointing"])
    assert (args.profile, args.channels_last, args.compile, args.gradient_checkpointing) == ("low-memory", True, True, False)
    defaults = build_parser().parse_args(["tune"])
    assert (defaults.profile, defaults.channels_last, defaults.compile) == (None, None, None)  # the config's defaults apply
    config = RunConfig()
    assert (config.tune.profile, config.tune.channels_last, config.tune.compile) == ("default", False, False)
    config.tune.profile = "fastest"
    with pytest.raises(ConfigError, match="profile 'fastest' is unknown"):
        config.validate()
