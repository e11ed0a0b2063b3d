"""Attention control and the inversions it edits from, on tiny real models and the bundled toy model: processors
against naive attention, full replacement with identical prompts, null-text against DDIM reconstruction, the
blend mask, and the command line's errors."""

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import Attention
from tiny import SD_SCHEDULER, tiny_text_encoder, tiny_tokenizer, tiny_unet, tiny_vae, tune_toy_run

from tuneavideo.cli import main
from tuneavideo.config import ConfigError, SampleConfig
from tuneavideo.control import (AttentionController, AttentionRecord, ControlledCrossAttnProcessor, ControlledSelfAttnProcessor,
                                TokenPlan, build_controller, fatezero_record_bytes, plan_tokens, record_attention, word_tokens)
from tuneavideo.inversion import ddim_invert, null_text_optimise
from tuneavideo.models import TuneAVideoUNet
from tuneavideo.pipeline import TuneAVideoPipeline
from tuneavideo.runfolder import PROMPT_INVERSION

FRAMES = 3
SD15_CONFIGS = Path(__file__).resolve().parents[1] / "src" / "tuneavideo" / "configs" / "sd15"


def tiny_pipe() -> TuneAVideoPipeline:
    unet = TuneAVideoUNet.from_unet2d(tiny_unet(), seed=0)
    scheduler = DDIMScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k != "skip_prk_steps"})
    pipe = TuneAVideoPipeline(tiny_vae(), tiny_text_encoder(), tiny_tokenizer(), unet, scheduler)
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        module.eval().requires_grad_(False)
    return pipe


def identity_plan(length: int = 77) -> TokenPlan:
    return TokenPlan(torch.arange(length), torch.ones(length, dtype=torch.bool), torch.ones(length))


# ------------------------------------------------------------------------------------------ naive references


def naive_attention(query, key, value):
    """softmax(Q K^T / sqrt(d)) V for one head: (n, d), (m, d), (m, d) -> (n, d), and the map (n, m)."""
    probs = torch.softmax(query @ key.T / query.shape[-1] ** 0.5, dim=-1)
    return probs @ value, probs


def heads_of(x, heads):
    return x.view(x.shape[0], heads, -1)  # (tokens, heads, d)


def naive_sparse_causal(attn: Attention, x: torch.Tensor, frames: int, maps_from=None):
    """Frame i's queries against frames 0 and max(i - 1, 0), head by head; ``maps_from`` (a function of (row, frame,
    head) giving a map) replaces the map. Returns ((b f), n, c) and the maps {(row, frame, head): (n, 2n)}."""
    rows = x.shape[0] // frames
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    out, maps = torch.zeros_like(q), {}
    for row in range(rows):
        for f in range(frames):
            i, first, previous = row * frames + f, row * frames, row * frames + max(f - 1, 0)
            keys, values = torch.cat([k[first], k[previous]]), torch.cat([v[first], v[previous]])
            for h in range(attn.heads):
                qh, kh, vh = (heads_of(t, attn.heads)[:, h] for t in (q[i], keys, values))
                o, probs = naive_attention(qh, kh, vh)
                if maps_from is not None:
                    probs = maps_from(row, f, h)
                    o = probs @ vh
                maps[(row, f, h)] = probs
                heads_of(out[i], attn.heads)[:, h] = o
    return attn.to_out[0](out), maps


def naive_cross(attn: Attention, x: torch.Tensor, context: torch.Tensor, maps_from=None):
    """Cross-attention head by head; ``maps_from(i, head)`` replaces the map of row ``i``."""
    q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
    out, maps = torch.zeros_like(q), {}
    for i in range(x.shape[0]):
        for h in range(attn.heads):
            o, probs = naive_attention(*(heads_of(t[i], attn.heads)[:, h] for t in (q, k, v)))
            if maps_from is not None:
                probs = maps_from(i, h)
                o = probs @ heads_of(v[i], attn.heads)[:, h]
            heads_of(out[i], attn.heads)[:, h] = o
            maps[(i, h)] = probs
    return attn.to_out[0](out), maps


@pytest.fixture
def attn():
    torch.manual_seed(0)
    return Attention(query_dim=32, cross_attention_dim=16, heads=4, dim_head=8).eval()


@pytest.fixture
def self_attn():
    torch.manual_seed(1)
    return Attention(query_dim=32, heads=4, dim_head=8).eval()


@torch.no_grad()
def test_processors_match_naive_attention(attn, self_attn):
    """Recording, each processor computes softmax(QK^T/sqrt(d))V and hands over exactly those maps."""
    torch.manual_seed(2)
    x = torch.randn(2 * FRAMES, 16, 32)  # ((b f), n, c): two videos of 4x4 tokens
    context = torch.randn(2 * FRAMES, 5, 16)  # ((b f), l, d)
    record = AttentionRecord()
    controller = AttentionController("record", identity_plan(5), num_frames=FRAMES, num_steps=1, latent_size=(4, 4),
                                     cross_replace=1, self_replace=1, record=record)
    ours = ControlledSelfAttnProcessor(controller, "self")(self_attn, x, num_frames=FRAMES)
    expected, maps = naive_sparse_causal(self_attn, x, FRAMES)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    recorded = record.self_maps[(0, "self")].float()  # the first row's maps, (f, heads, n, 2n)
    for f in range(FRAMES):
        for h in range(self_attn.heads):
            torch.testing.assert_close(recorded[f, h], maps[(0, f, h)], atol=1e-3, rtol=1e-3)  # kept in fp16

    ours = ControlledCrossAttnProcessor(controller, "cross")(attn, x, context)
    expected, maps = naive_cross(attn, x, context)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(record.cross_maps[(0, "cross")][1, 2].float(), maps[(1, 2)], atol=1e-3, rtol=1e-3)


@torch.no_grad()
def test_p2p_processors_give_the_edit_the_source_maps(attn, self_attn):
    """P2P: the edit row (last) attends with the source row's maps and its own values; reweighting scales a token."""
    torch.manual_seed(3)
    x = torch.randn(2 * FRAMES, 16, 32)
    controller = AttentionController("p2p", identity_plan(5), num_frames=FRAMES, num_steps=1, latent_size=(4, 4),
                                     cross_replace=1, self_replace=1)
    ours = ControlledSelfAttnProcessor(controller, "self")(self_attn, x, num_frames=FRAMES)
    _, source_maps = naive_sparse_causal(self_attn, x, FRAMES)
    expected, _ = naive_sparse_causal(self_attn, x, FRAMES, maps_from=lambda row, f, h: source_maps[(0, f, h)])
    torch.testing.assert_close(ours[FRAMES:], expected[FRAMES:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[:FRAMES], naive_sparse_causal(self_attn, x, FRAMES)[0][:FRAMES], atol=1e-5, rtol=1e-5)

    context = torch.randn(2 * FRAMES, 5, 16)
    controller.plan.reweight[2] = 3.0
    ours = ControlledCrossAttnProcessor(controller, "cross")(attn, x, context)
    _, maps = naive_cross(attn, x, context)

    def source_reweighted(i, h):
        probs = maps[(i % FRAMES, h)].clone()  # the source frame's map (rows 0 .. FRAMES - 1)
        probs[:, 2] *= 3.0
        return probs

    expected, _ = naive_cross(attn, x, context, maps_from=source_reweighted)
    torch.testing.assert_close(ours[FRAMES:], expected[FRAMES:], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_identical_prompts_with_full_replacement_give_the_source():
    """Identical prompts, every fraction at 1, a reweight of 1 and a blend: the edit row is exactly the source row,
    and both are the plain (uncontrolled) sample of the prompt."""
    pipe = tiny_pipe()
    prompt = "a red circle moving right"
    noise = torch.randn(1, 4, FRAMES, 8, 8, generator=torch.Generator().manual_seed(0))
    sample = SampleConfig(num_inference_steps=4, num_inversion_steps=4, control="p2p", cross_replace=1.0, self_replace=1.0,
                          reweight=["red=1"], blend=["circle"], guidance_scale=5.0)
    controller = build_controller(pipe.tokenizer, sample, prompt, prompt, num_frames=FRAMES, latent_size=(8, 8))
    both = pipe([prompt, prompt], FRAMES, 64, 64, 4, 5.0, "", 0.0, None, noise, output_type="latent", controller=controller)
    torch.testing.assert_close(both[1], both[0], rtol=0, atol=0)
    plain = pipe(prompt, FRAMES, 64, 64, 4, 5.0, "", 0.0, None, noise, output_type="latent")
    torch.testing.assert_close(both[0], plain[0], atol=1e-4, rtol=1e-4)  # batch of 2 against 1: float32 rounding differs
    # not vacuous: another prompt with nothing replaced gives another video, replacing everything brings it close
    edit = "a blue circle moving right"
    free = SampleConfig(num_inference_steps=4, num_inversion_steps=4, control="p2p", cross_replace=0.0, self_replace=0.0)
    apart = pipe([prompt, edit], FRAMES, 64, 64, 4, 5.0, "", 0.0, None, noise, output_type="latent",
                 controller=build_controller(pipe.tokenizer, free, prompt, edit, num_frames=FRAMES, latent_size=(8, 8)))
    assert (apart[1] - apart[0]).abs().mean() > 1e-3
    tied = SampleConfig(num_inference_steps=4, num_inversion_steps=4, control="p2p", cross_replace=1.0, self_replace=1.0)
    close = pipe([prompt, edit], FRAMES, 64, 64, 4, 5.0, "", 0.0, None, noise, output_type="latent",
                 controller=build_controller(pipe.tokenizer, tied, prompt, edit, num_frames=FRAMES, latent_size=(8, 8)))
    assert (close[1] - close[0]).abs().mean() < (apart[1] - apart[0]).abs().mean()
    assert all(name.endswith("Processor2_0") or "SparseCausal" in name
               for name in {type(p).__name__ for p in pipe.unet.attn_processors.values()})  # processors restored


def test_token_alignment_and_word_errors():
    tokenizer = tiny_tokenizer()
    source, swap, longer = "a red circle on grass", "a blue circle on grass", "a big red circle on green grass"
    assert word_tokens(tokenizer, source, "circle") == [3] and word_tokens(tokenizer, longer, "green grass") == [6, 7]
    plan = plan_tokens(tokenizer, source, swap)
    assert plan.aligned.all() and torch.equal(plan.mapping, torch.arange(77))  # word swap: position by position
    plan = plan_tokens(tokenizer, source, longer, {"big": 2.0}, ["circle"])
    assert not plan.aligned[2] and plan.aligned[3] and plan.mapping[3] == 2  # "big" is new, "red" moved by one
    assert plan.mapping[4] == 3 and not plan.aligned[6] and plan.mapping[7] == 5  # circle; green new; grass
    assert plan.reweight[2] == 2.0 and plan.source_blend == [3] and plan.edit_blend == [4]
    with pytest.raises(ConfigError, match="'purple'"):
        plan_tokens(tokenizer, source, swap, {"purple": 2.0})
    with pytest.raises(ConfigError, match="'dog'"):
        plan_tokens(tokenizer, source, swap, blend=["dog"])
    with pytest.raises(ConfigError, match="'blue'.*source"):
        plan_tokens(tokenizer, source, swap, blend=["blue"], blend_in_source=True)


def test_blend_mask_is_normalised_thresholded_and_dilated():
    controller = AttentionController("p2p", identity_plan(), num_frames=2, num_steps=1, latent_size=(8, 8))
    maps = torch.full((2, 4, 4), 0.1)
    maps[0, 1, 1] = maps[1, 2, 3] = 1.0  # the word's attention peaks at one token per frame
    mask = controller.blend_mask([maps, torch.nn.functional.interpolate(maps[:, None], size=(2, 2), mode="area")[:, 0]])
    assert mask.shape == (2, 1, 8, 8) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask[0, 0, 0:6, 0:6].all() and not mask[0, 0, 6:].any()  # the peak dilated by one token (2 latent px)
    assert mask[1, 0, 2:8, 4:8].all() and not mask[1, 0, :, :2].any()


def test_fatezero_record_size():
    """The figure the docs state: SD 1.5 at 512x512, 50 steps, default fractions."""
    config = json.loads((SD15_CONFIGS / "unet" / "config.json").read_text())
    size = fatezero_record_bytes(config, 512, 512)
    assert size["total"] == 531_046_400 and size["self"] == 5 * 8 * 256 * 512 * 2 * 20 + 8 * 64 * 128 * 2 * 20


# ------------------------------------------------------------------------------------- inversion, toy model


@pytest.fixture(scope="module")
def toy():
    """The bundled toy model (untuned, inflated) and a rendered clip's latents."""
    from tuneavideo.demo import TOY_MODEL
    from tuneavideo.loading import load_base
    from tuneavideo.toyworld import Clip, clip_caption, render_clip
    from tuneavideo.tuning import build_pipeline, build_video_unet

    base = load_base(TOY_MODEL)
    pipe = build_pipeline(base, build_video_unet(base, seed=0), log=lambda *_: None)
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        module.eval().requires_grad_(False)
    clip = Clip(shape="circle", colour="red", size="large", background="blue sky", path="right", num_frames=4)
    frames = torch.from_numpy(render_clip(clip, size=64)).permute(0, 3, 1, 2).float() / 255
    latents, _ = pipe.encode_video(frames)
    return pipe, clip_caption(clip), latents


def test_null_text_inversion_reconstructs_better_than_ddim(toy):
    """Guidance 7.5 with the source prompt: DDIM inversion (with the source prompt, and the method's with the empty one)
    drifts; null-text inversion retraces the trajectory; negative-prompt inversion is in between or better."""
    pipe, prompt, latents = toy
    steps, scale = 10, 7.5
    context = pipe.encode_prompt([prompt])
    trajectory = ddim_invert(pipe.unet, pipe.scheduler, latents, context, steps, return_trajectory=True)
    assert len(trajectory) == steps + 1 and torch.equal(trajectory[0], latents)
    torch.testing.assert_close(trajectory[-1], ddim_invert(pipe.unet, pipe.scheduler, latents, context, steps), rtol=0, atol=0)
    empty = ddim_invert(pipe.unet, pipe.scheduler, latents, pipe.encode_prompt([""]), steps)
    embeddings = null_text_optimise(pipe.unet, pipe.scheduler, trajectory, context, pipe.encode_prompt([""]), scale)
    assert embeddings.shape == (steps, 1, *context.shape[1:])
    assert not any(p.grad is not None for p in pipe.unet.parameters())

    def error(start, uncond=None):
        out = pipe(prompt, 4, 64, 64, steps, scale, "", 0.0, None, start, output_type="latent", uncond_embeddings=uncond)
        return ((out - latents) ** 2).mean().item()

    ddim, method, null = error(trajectory[-1]), error(empty), error(trajectory[-1], embeddings)
    negative = error(trajectory[-1], context)
    print(f"latent MSE at guidance {scale}: DDIM {ddim:.4f}, the method's DDIM {method:.4f}, "
          f"negative-prompt {negative:.4f}, null-text {null:.4f}")
    assert null < 0.5 * min(ddim, method)
    assert negative < min(ddim, method)


@pytest.mark.xfail(strict=True, reason="the bundled toy model's cross-attention marks no region: layers that place the "
                   "word on the object and layers that place it on the background average out (benchmarks/blend_masks.py: "
                   "IoU 0.20, the mask covers 56 % of the frame; the seed-0 model, 0.10 and all of it); a ruler whose "
                   "cross-attention marks the object passes")
def test_blend_mask_of_the_object_word_covers_the_object(toy):
    """FateZero's recorded blend mask of the object's word, at every recorded step and frame, against the renderer's
    own object mask (latent pixels at least half covered): IoU at least 0.5."""
    import numpy as np

    from tuneavideo.toyworld import Clip
    from tuneavideo.toyworld.render import object_coverage, scene_at

    pipe, prompt, latents = toy
    clip = Clip(shape="circle", colour="red", size="large", background="blue sky", path="right", num_frames=4)
    sample = SampleConfig(num_inference_steps=10, num_inversion_steps=10, blend=["circle"])
    size = tuple(latents.shape[-2:])
    _, record = record_attention(pipe.unet, pipe.scheduler, latents, pipe.encode_prompt([prompt]), pipe.tokenizer,
                                 sample, prompt, latent_size=size)
    factor = 64 // size[-1]
    coverage = np.stack([object_coverage(scene_at(clip, frame), 64) for frame in range(clip.num_frames)])
    truth = torch.from_numpy(coverage.reshape(-1, size[0], factor, size[1], factor).mean((2, 4)) >= 0.5)
    assert record.masks and truth.any()
    for step, mask in record.masks.items():
        found = mask[:, 0].bool()
        iou = ((found & truth).sum((1, 2)) / (found | truth).sum((1, 2))).float()
        assert iou.min() >= 0.5, f"step {step}: IoU per frame {iou.tolist()}"


# ------------------------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder tuned for 1 step on a rendered toy clip with a tiny SD model."""
    return tune_toy_run(tmp_path_factory.mktemp("control"), rendered_frames=4)


@pytest.mark.parametrize("flags, message", [
    (["--control", "p2p", "--no-inversion"], "--control p2p edits the inverted source"),
    (["--control", "p2p", "--blend", "dog"], "'dog'"),
    (["--control", "p2p", "--reweight", "purple=2"], "'purple'"),
    (["--control", "p2p", "--reweight", "purple"], "WORD=FACTOR"),
    (["--blend", "circle"], "add --control p2p"),
    (["--control", "fatezero", "--blend", "circle"], "--inversion null-text"),
    (["--control", "fatezero", "--inversion", "negative-prompt"], "needs --blend"),
    (["--control", "fatezero", "--inversion", "null-text", "--blend", "green"], "source prompt"),
    (["--inversion", "null-text", "--inversion-steps", "3"], "--inversion-steps 2"),
    (["--inversion", "null-text", "--guidance", "1"], "--guidance above 1"),
    (["--control", "p2p", "--cross-replace", "1.5"], "cross_replace 1.5"),
])
def test_cli_errors(run, tmp_path, capsys, flags, message):
    code = main(["edit", str(run), "--prompt", "a green circle moving right on blue sky", "--output", str(tmp_path), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and errors[0] == err[-1] and message in errors[0], err
    assert not any(tmp_path.iterdir())


def test_cli_controlled_edits(run, tmp_path, capsys):
    """Null-text + P2P with a blend, then FateZero; the JSON records the control; the cache is reused, and made again
    with a note when the guidance changes."""
    prompt = "a green circle moving right on blue sky"
    out = tmp_path / "p2p"
    assert main(["edit", str(run), "--prompt", prompt, "--output", str(out), "--inversion", "null-text", "--control", "p2p",
                 "--blend", "circle", "--reweight", "green=2", "--cross-replace", "0.5"]) == 0
    record = json.loads((out / "a-green-circle-moving-right-on-blue-sky.json").read_text())
    assert (record["control"], record["inversion"], record["blend"], record["reweight"]) == ("p2p", "null-text", ["circle"], ["green=2"])
    assert record["cross_replace"] == 0.5 and record["self_replace"] == 0.4 and record["coupled_guidance"] is False
    cache = run / PROMPT_INVERSION
    assert cache.is_file()
    made = cache.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["edit", str(run), "--prompt", prompt, "--output", str(tmp_path / "again"), "--inversion", "null-text"]) == 0
    assert cache.stat().st_mtime_ns == made and "note:" not in capsys.readouterr().err  # reused
    assert main(["edit", str(run), "--prompt", prompt, "--output", str(tmp_path / "fz"), "--inversion", "null-text",
                 "--guidance", "5", "--control", "fatezero", "--blend", "circle"]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "guidance 12.5" in err and cache.stat().st_mtime_ns != made
    assert json.loads((tmp_path / "fz" / "a-green-circle-moving-right-on-blue-sky.json").read_text())["control"] == "fatezero"


def test_fatezero_records_once_for_the_prompts_of_one_edit(run, tmp_path, monkeypatch):
    """Two FateZero prompts in one edit() fuse with one record of the source's attention; the second prompt's video is
    what a freshly loaded run gives it alone, and other settings make the record again."""
    import tuneavideo.control as control
    from tuneavideo.editing import edit, load_run

    calls = []
    recorded = control.record_attention
    monkeypatch.setattr(control, "record_attention", lambda *a, **k: calls.append(1) or recorded(*a, **k))
    from dataclasses import replace

    prompts = ["a green circle moving right on blue sky", "a red circle moving right on white snow"]
    tuned = load_run(run)
    fused = replace(tuned.config.sample, inversion="null-text", control="fatezero", blend=["circle"],
                    num_inference_steps=4, num_inversion_steps=4)
    both = edit(tuned, prompts, fused, output_dir=tmp_path / "both", progress=False).videos
    assert len(calls) == 1
    alone = edit(load_run(run), prompts[1:], fused, output_dir=tmp_path / "alone", progress=False).videos
    assert len(calls) == 2 and torch.equal(both[1], alone[0])
    edit(tuned, prompts[:1], replace(fused, self_replace=0.5), output_dir=tmp_path / "other", progress=False)
    assert len(calls) == 3


@torch.no_grad()
def test_equal_prompts_are_encoded_to_equal_rows():
    """A batch of prompts with repeats: equal prompts get exactly equal embeddings (what the controlled edit of a
    prompt with itself rests on), in the order asked for, each as the prompt encoded alone by the text encoder."""
    pipe = tiny_pipe()
    prompts = ["a red circle", "", "a red circle", "a blue square", ""]
    rows = pipe.encode_prompt(prompts)
    assert rows.shape[0] == len(prompts)
    assert torch.equal(rows[0], rows[2]) and torch.equal(rows[1], rows[4])
    for prompt, row in zip(prompts, rows):
        ids = pipe.tokenizer([prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             return_tensors="pt").input_ids
        torch.testing.assert_close(row, pipe.text_encoder(ids)[0][0], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(rows[0], rows[3])
