"""The bundled toy text-to-image model (src/tuneavideo/assets/toy-sd) and its training code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tuneavideo.toymodel.data import HELD_OUT, is_held_out, random_caption, training_scene
from tuneavideo.toyworld.detect import detect_frame
from tuneavideo.toyworld.render import (
    BACKGROUNDS,
    CAPTION_TEMPLATES,
    CLIP_CAPTION_TEMPLATES,
    COLOURS,
    PATHS,
    SHAPES,
    SIZES,
    all_caption_words,
)

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "tuneavideo" / "assets" / "toy-sd"
#: A pretraining run small enough for a test (seconds).
TINY_RUN = dict(
    vae_channels=(8, 8, 8), vae_groups=4, unet_channels=(16, 32, 32), unet_groups=8, unet_heads=2,
    text_width=16, text_layers=1, text_heads=2, vae_batch=2, unet_batch=2, num_scenes=4, warmup_steps=1,
    monitor_every=0, log_every=0, video_steps=2, video_frames=2, num_videos=2,
)
SD_BLOCKS = {"CrossAttnDownBlock2D", "DownBlock2D", "UNetMidBlock2DCrossAttn", "UpBlock2D", "CrossAttnUpBlock2D"}


@pytest.fixture(scope="module")
def pipe():
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(BUNDLED, local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------ the folder


def test_bundled_folder_is_a_stable_diffusion_pipeline(pipe):
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    index = json.loads((BUNDLED / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    # each component loads with its own diffusers / transformers class, as a real SD base does
    unet = UNet2DConditionModel.from_pretrained(BUNDLED / "unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(BUNDLED / "vae", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(BUNDLED / "text_encoder", local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(BUNDLED / "tokenizer", local_files_only=True)
    scheduler = PNDMScheduler.from_pretrained(BUNDLED / "scheduler", local_files_only=True)
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert pipe.safety_checker is None
    for model in (unet, vae, pipe.unet, pipe.vae, pipe.text_encoder):
        assert next(model.parameters()).dtype == torch.float32  # fp16 storage is loaded as float32

    blocks = set(unet.config.down_block_types) | set(unet.config.up_block_types) | {unet.config.mid_block_type}
    assert blocks <= SD_BLOCKS
    from diffusers.models.attention import BasicTransformerBlock

    transformer_blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    assert transformer_blocks and all(b.norm_type == "layer_norm" and b.attn2 is not None for b in transformer_blocks)
    assert unet.config.in_channels == unet.config.out_channels == vae.config.latent_channels == 4
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size

    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    assert 64 % scale == 0 and unet.config.sample_size * scale == 64
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert latents.shape == (1, 4, 64 // scale, 64 // scale)
    assert 0.05 < vae.config.scaling_factor < 20

    config = scheduler.config
    assert (config.beta_start, config.beta_end, config.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert config.num_train_timesteps == 1000 and config.steps_offset == 1 and config.set_alpha_to_one is False
    assert config.prediction_type == "epsilon"  # Stable Diffusion 1.x's objective (the loaders take 2.x's v_prediction too)
    assert json.loads((BUNDLED / "scheduler" / "scheduler_config.json").read_text())["clip_sample"] is False
    assert (BUNDLED / "TRAINING.md").is_file()


def test_bundled_weights_are_small_safetensors():
    weights = list(BUNDLED.rglob("*.safetensors"))
    assert {p.parent.name for p in weights} == {"unet", "vae", "text_encoder"}
    assert not list(BUNDLED.rglob("*.bin"))
    assert sum(p.stat().st_size for p in weights) <= 25 * 1024 * 1024


def test_project_loader_and_inflation_accept_the_bundled_model():
    from tuneavideo.loading import load_base
    from tuneavideo.models import TuneAVideoUNet

    base = load_base(BUNDLED)
    video_unet = TuneAVideoUNet.from_unet2d(base.unet)
    torch.manual_seed(0)
    size = base.unet.config.sample_size
    frame = torch.randn(1, 4, size, size)
    ids = base.tokenizer(["a red circle moving right on green grass"], padding="max_length",
                         max_length=base.tokenizer.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        context = base.text_encoder(ids)[0]
        image_eps = base.unet(frame, 500, context).sample
        video_eps = video_unet(frame.unsqueeze(2).expand(-1, -1, 3, -1, -1), 500, context).sample
    # identical frames: the inflated model equals the image model (temporal layers start at zero)
    for f in range(3):
        torch.testing.assert_close(video_eps[:, :, f], image_eps, atol=1e-4, rtol=1e-4)


# -------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_maps_each_world_word_to_one_token(pipe):
    tokenizer = pipe.tokenizer
    words = all_caption_words()
    assert {"red", "circle", "grass", "diagonally", "with", "a"} <= words
    ids = set()
    for word in words:
        tokens = tokenizer(word, add_special_tokens=False).input_ids
        assert len(tokens) == 1, (word, tokenizer.convert_ids_to_tokens(tokens))
        assert tokens[0] != tokenizer.unk_token_id
        ids.add(tokens[0])
    assert len(ids) == len(words)
    assert tokenizer.bos_token == "<|startoftext|>" and tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert len(tokenizer) <= pipe.text_encoder.config.vocab_size
    # the longest captions fit with both special tokens
    longest = max(len(t.split()) for t in CAPTION_TEMPLATES + CLIP_CAPTION_TEMPLATES) + 2 + 2  # 2-word phrases
    assert tokenizer.model_max_length >= longest
    encoded = tokenizer("a small purple triangle moving diagonally on black night").input_ids
    assert encoded[0] == tokenizer.bos_token_id and encoded[-1] == tokenizer.eos_token_id and len(encoded) == 11
    assert (BUNDLED / "tokenizer" / "vocab.json").is_file() and (BUNDLED / "tokenizer" / "merges.txt").is_file()


def test_text_encoder_keeps_every_shape_word_apart(pipe):
    """Changing the shape word moves the text encoder's output at least half as far as changing the colour word
    does (a text encoder once trained with the UNet mapped circle and square to 0.86 apart, red to blue 18.0)."""
    def states(prompt):
        ids = pipe.tokenizer([prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             return_tensors="pt").input_ids
        with torch.no_grad():
            return pipe.text_encoder(ids)[0][0]

    base = states("a red circle on green grass")
    colour_change = min((states(f"a {c} circle on green grass") - base).norm() for c in COLOURS if c != "red")
    for shape in SHAPES:
        if shape != "circle":
            assert (states(f"a red {shape} on green grass") - base).norm() > 0.5 * colour_change, shape


# ----------------------------------------------------------------------------------------- generation

# (prompt, colour, shape, background, noise seed): held-out and seen combinations
PROMPTS = [
    ("a red circle on green grass", "red", "circle", "green grass", 0),  # held out
    ("blue sky with a green square", "green", "square", "blue sky", 1),  # held out
    ("a large yellow cross on sandy beach", "yellow", "cross", "sandy beach", 2),  # held out
    ("a purple triangle on black night", "purple", "triangle", "black night", 3),  # held out
    ("a small orange circle on white snow", "orange", "circle", "white snow", 4),
    ("grey road with a blue square", "blue", "square", "grey road", 5),
]


@pytest.fixture(scope="module")
def generated(pipe):
    prompts = [p for p, *_ in PROMPTS]
    generators = [torch.Generator().manual_seed(seed) for *_, seed in PROMPTS]
    images = pipe(prompts, height=64, width=64, num_inference_steps=15, guidance_scale=7.5,
                  generator=generators, output_type="np").images
    assert images.shape == (len(PROMPTS), 64, 64, 3)
    return [detect_frame(image) for image in images]


def test_generated_images_have_the_prompted_colour_and_background(generated):
    # the bundled model draws the prompted colour in 100 % of 96 held-out samples and of 96 trained ones, the
    # background in 100 % and 99.0 % (its TRAINING.md); the seed-0 model bundled until commit 50f22fe drew held-out
    # colours in 87.5 %
    for (prompt, colour, _, background, _), found in zip(PROMPTS, generated):
        assert found.found, prompt
        assert found.background == background, (prompt, found.attributes())
    colours_right = sum(found.colour == colour for (_, colour, _, _, _), found in zip(PROMPTS, generated))
    assert colours_right >= len(PROMPTS) - 1, [d.attributes() for d in generated]


def test_generated_images_have_the_prompted_shape(generated):
    # the bundled model draws the prompted shape in 99.0 % of 96 held-out samples and 100 % of 96 trained ones (its
    # TRAINING.md); an earlier model drew it in about half, and failed this
    shapes_right = sum(found.shape == shape for (_, _, shape, _, _), found in zip(PROMPTS, generated))
    assert shapes_right >= len(PROMPTS) - 1, [d.attributes() for d in generated]


def test_evaluate_model_reports_per_attribute_accuracy():
    from tuneavideo.toymodel.evaluate import evaluate_model

    result = evaluate_model(BUNDLED, n_samples=2, seed=0, combinations=[HELD_OUT[0]], num_inference_steps=8)
    assert set(result["accuracy"]) >= {"colour", "shape", "background", "all", "found", "intact"}
    assert all(0.0 <= v <= 1.0 for v in result["accuracy"].values())
    assert result["accuracy"]["intact"] <= result["accuracy"]["found"]  # a sample without an object is not intact
    assert result["settings"]["samples"] == 2
    assert list(result["per_combination"]) == ["red circle on green grass"]


# ---------------------------------------------------------------------------------------- training data


def test_held_out_combinations_are_balanced_and_never_trained_on():
    assert len(set(HELD_OUT)) == len(HELD_OUT)
    for colour, shape, background in HELD_OUT:
        assert colour in COLOURS and shape in SHAPES and background in BACKGROUNDS
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert len({(t[a], t[b]) for t in HELD_OUT}) == len(HELD_OUT)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(3000):
        scene = training_scene(rng)
        assert not is_held_out(scene.colour, scene.shape, scene.background)
        seen.add((scene.colour, scene.shape, scene.background))
    assert len(seen) == len(COLOURS) * len(SHAPES) * len(BACKGROUNDS) - len(HELD_OUT)


def test_random_captions_cover_templates_and_the_empty_caption():
    rng = np.random.default_rng(0)
    captions = [random_caption((0, 1, 0, 2), rng) for _ in range(2000)]
    empty = captions.count("") / len(captions)
    assert 0.07 < empty < 0.13
    motion = [c for c in captions if any(p in c for p in PATHS.values())]
    assert 0.2 < len(motion) / len(captions) < 0.35
    for caption in set(captions) - {""}:
        words = caption.split()
        assert "circle" in words and "green" in words and "white" in words and "snow" in words
        assert not (set(words) - all_caption_words())
    assert any("small" in c for c in captions) and not any("large" in c for c in captions)
    assert SIZES  # sizes exist in the vocabulary


# --------------------------------------------------------------------------------------------- training


def test_pretrain_runs_end_to_end_and_the_result_loads(tmp_path):
    from diffusers import StableDiffusionPipeline

    from tuneavideo.loading import load_base
    from tuneavideo.toymodel.pretrain import pretrain

    tiny = TINY_RUN
    out = tmp_path / "toy"
    summary = pretrain(out, seed=1, vae_steps=2, unet_steps=3, progress=False, **tiny)
    assert summary["unet_steps_done"] == 3 and (out / "training.json").is_file()
    assert json.loads((out / "training.json").read_text())["config"]["seed"] == 1

    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle on green grass", height=64, width=64, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="np").images
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
    base = load_base(out)
    assert base.vae.config.scaling_factor == pytest.approx(summary["scaling_factor"])

    # same seed and settings: the same weights
    again = pretrain(tmp_path / "again", seed=1, vae_steps=2, unet_steps=3, progress=False, **tiny)
    assert again["final_mse"] == summary["final_mse"]
    from safetensors.torch import load_file

    first = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    second = load_file(tmp_path / "again" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {f"{part}.{k}": v for part in ("unet", "vae", "text_encoder") for path in (folder / part).glob("*.safetensors")
            for k, v in load_file(path).items()}


@pytest.mark.parametrize("train_text_encoder", [False, True])
def test_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, train_text_encoder):
    from tuneavideo.toymodel.pretrain import CHECKPOINT_DIR, main, pretrain

    run = dict(TINY_RUN, checkpoint_every=2, train_text_encoder=train_text_encoder)
    whole = pretrain(tmp_path / "whole", seed=3, vae_steps=2, unet_steps=5, progress=False, **run)
    assert not (tmp_path / "whole" / CHECKPOINT_DIR).exists()  # a finished run keeps no resumable state
    # stopped after step 3: the last checkpoint is step 2's, so the resumed run redoes step 3
    pretrain(tmp_path / "cut", seed=3, vae_steps=2, unet_steps=5, progress=False, unet_stop_step=3, **run)
    assert (tmp_path / "cut" / CHECKPOINT_DIR / "state.pt").is_file()
    # starting afresh over an unfinished run is refused; so is a changed setting on resume
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(tmp_path / "cut", seed=3, vae_steps=2, unet_steps=5, progress=False, **run)
    with pytest.raises(ValueError, match="keeps the settings"):
        pretrain(tmp_path / "cut", seed=3, resume=True, progress=False, lr=1e-3)
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path / "cut"), "--resume", "--unet-steps", "9"])
    assert main(["--output", str(tmp_path / "cut"), "--resume", "--quiet"]) == 0
    resumed = json.loads((tmp_path / "cut" / "training.json").read_text())
    assert resumed["unet_steps_done"] == 5 and resumed["final_mse"] == whole["final_mse"]
    assert not (tmp_path / "cut" / CHECKPOINT_DIR).exists()
    first, second = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(ValueError, match="no unfinished run"):
        pretrain(tmp_path / "whole", seed=3, resume=True, progress=False)


def test_resuming_a_damaged_pretraining_checkpoint_is_a_usage_error(tmp_path, capsys):
    from tuneavideo.toymodel.pretrain import CHECKPOINT_DIR, main

    (tmp_path / "run" / CHECKPOINT_DIR).mkdir(parents=True)
    (tmp_path / "run" / CHECKPOINT_DIR / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as stop:
        main(["--output", str(tmp_path / "run"), "--resume"])
    assert stop.value.code == 2 and "is damaged" in capsys.readouterr().err


def test_a_vae_taken_from_an_earlier_run_gives_the_full_runs_weights(tmp_path):
    from tuneavideo.toymodel.pretrain import pretrain

    full = pretrain(tmp_path / "full", seed=4, vae_steps=2, unet_steps=3, progress=False, **TINY_RUN)
    reused = pretrain(tmp_path / "reused", seed=4, vae_steps=0, unet_steps=3, progress=False,
                      vae_from=str(tmp_path / "full"), **TINY_RUN)
    assert reused["final_mse"] == full["final_mse"]
    first, second = _weights(tmp_path / "full"), _weights(tmp_path / "reused")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_unet_taken_from_an_earlier_run_gives_the_full_runs_weights(tmp_path):
    """``unet_from`` skips the UNet phase and starts the video phase from the earlier run's UNet: with a run that
    stopped before the video phase, the same weights as the run that went through both."""
    from tuneavideo.toymodel.pretrain import pretrain

    run = dict(TINY_RUN, video_steps=3)
    pretrain(tmp_path / "image", seed=6, vae_steps=2, unet_steps=3, progress=False, **dict(run, video_steps=0))
    full = pretrain(tmp_path / "full", seed=6, vae_steps=2, unet_steps=3, progress=False, **run)
    reused = pretrain(tmp_path / "reused", seed=6, vae_steps=0, progress=False, vae_from=str(tmp_path / "image"),
                      unet_from=str(tmp_path / "image"), **run)
    assert full["video"]["steps_done"] == reused["video"]["steps_done"] == 3
    assert reused["unet_steps_done"] == 0 and reused["video"]["final_mse"] == full["video"]["final_mse"]
    first, second, image = _weights(tmp_path / "full"), _weights(tmp_path / "reused"), _weights(tmp_path / "image")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], image[k]) for k in first if k.startswith("unet."))  # the video phase trained


@pytest.mark.parametrize("penalty, scale_noise, offset", [(0.0, 0.0, 0.0), (10.0, 0.0, 0.0), (0.0, 0.2, 0.0),
                                                          (0.0, 0.0, 10.0)])
def test_pretraining_interrupted_in_the_video_phase_resumes_to_the_same_weights(tmp_path, penalty, scale_noise, offset):
    from tuneavideo.toymodel.pretrain import CHECKPOINT_DIR, main, pretrain

    # with a penalty or the scale noise, clip steps only (a 4-step run might draw no clip step for them to act on)
    acting = penalty or scale_noise or offset
    run = dict(TINY_RUN, video_steps=4, checkpoint_every=2, video_norm_penalty=penalty, video_norm_offset_penalty=offset,
               video_frame_scale_noise=scale_noise, **({"video_image_share": 0.0} if acting else {}))
    whole = pretrain(tmp_path / "whole", seed=7, vae_steps=2, unet_steps=2, progress=False, **run)
    pretrain(tmp_path / "cut", seed=7, vae_steps=2, unet_steps=2, progress=False, video_stop_step=3, **run)
    assert (tmp_path / "cut" / CHECKPOINT_DIR / "state.pt").is_file()  # holds video step 2
    # the command line may stop a resumed run early again (a resumable setting), not change its arithmetic
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path / "cut"), "--resume", "--set", "video_lr=1e-3"])
    assert main(["--output", str(tmp_path / "cut"), "--resume", "--set", "video_stop_step=3", "--quiet"]) == 0
    assert json.loads((tmp_path / "cut" / "training.json").read_text())["video"]["steps_done"] == 3
    resumed = pretrain(tmp_path / "cut", seed=7, resume=True, progress=False)
    assert resumed["video"]["steps_done"] == 4 and resumed["video"]["final_mse"] == whole["video"]["final_mse"]
    assert resumed["video"]["final_spread"] == whole["video"]["final_spread"]
    assert resumed["video"]["final_offset"] == whole["video"]["final_offset"]
    assert (whole["video"]["final_spread"] is None) == (penalty == 0)
    assert (whole["video"]["final_offset"] is None) == (offset == 0)
    assert not (tmp_path / "cut" / CHECKPOINT_DIR).exists()
    first, second = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(first[k], second[k]) for k in first)
    if acting:  # the term acts: the same run without it ends elsewhere
        pretrain(tmp_path / "plain", seed=7, vae_steps=2, unet_steps=2, progress=False,
                 **dict(run, video_norm_penalty=0.0, video_frame_scale_noise=0.0, video_norm_offset_penalty=0.0))
        plain = _weights(tmp_path / "plain")
        assert not all(torch.equal(first[k], plain[k]) for k in first if k.startswith("unet."))


def test_video_norm_penalty_acts_only_on_levels_up_to_its_size(tmp_path):
    """The tiny UNet's levels are 16, 8 and 4 latent pixels wide. Limited to 2 the penalty finds no norm: the weights
    of the run without it. Limited to 4 (the deepest level) it acts, and ends elsewhere than on every level."""
    from tuneavideo.toymodel.pretrain import pretrain

    run = dict(TINY_RUN, video_steps=2, video_image_share=0.0)  # clip steps only

    def weights(name: str, **settings) -> tuple[dict, dict]:
        summary = pretrain(tmp_path / name, seed=7, vae_steps=2, unet_steps=2, progress=False, **dict(run, **settings))
        return summary["video"], {k: v for k, v in _weights(tmp_path / name).items() if k.startswith("unet.")}

    plain = weights("plain", video_norm_penalty=0.0)[1]
    none_summary, none = weights("none", video_norm_penalty=10.0, video_norm_penalty_max_size=2)
    deep_summary, deep = weights("deep", video_norm_penalty=10.0, video_norm_penalty_max_size=4)
    every = weights("every", video_norm_penalty=10.0)[1]
    assert none_summary["final_spread"] is None and all(torch.equal(none[k], plain[k]) for k in plain)
    assert deep_summary["final_spread"] is not None
    assert not all(torch.equal(deep[k], plain[k]) for k in plain)
    assert not all(torch.equal(deep[k], every[k]) for k in plain)


def test_video_phase_without_pooling_normalises_each_frame_of_a_clip_by_itself(tmp_path):
    """``video_pool_statistics`` off: the clip steps find no pooled norm, so the spread penalty has nothing to act on
    (the weights of the run without it), and the weights end elsewhere than the pooled run's."""
    from tuneavideo.toymodel.pretrain import pretrain

    run = dict(TINY_RUN, video_steps=2, video_image_share=0.0)  # clip steps only

    def weights(name: str, **settings) -> tuple[dict, dict]:
        summary = pretrain(tmp_path / name, seed=7, vae_steps=2, unet_steps=2, progress=False, **dict(run, **settings))
        return summary["video"], {k: v for k, v in _weights(tmp_path / name).items() if k.startswith("unet.")}

    pooled_summary, pooled = weights("pooled", video_norm_penalty=10.0)
    alone_summary, alone = weights("alone", video_norm_penalty=10.0, video_pool_statistics=False)
    plain = weights("plain", video_pool_statistics=False)[1]
    assert pooled_summary["final_spread"] is not None and alone_summary["final_spread"] is None
    assert all(torch.equal(alone[k], plain[k]) for k in plain)
    assert not all(torch.equal(alone[k], pooled[k]) for k in plain)


def test_video_frame_scale_noise_acts_only_where_statistics_are_pooled(tmp_path):
    """The scale noise multiplies a frame's input to the pooled GroupNorms only (a norm with per-frame statistics
    would divide the factor out): with ``video_pool_statistics`` off the run ends on exactly the weights it ends on
    without the noise, pooled it ends elsewhere. Pooled, a frame scaled by 2 comes out of the norm at twice the scale
    of the frame beside it: what the noise is there to simulate."""
    from tuneavideo.models.unet import FrameGroupNorm
    from tuneavideo.toymodel.pretrain import pretrain

    run = dict(TINY_RUN, video_steps=2, video_image_share=0.0)  # clip steps only

    def weights(name: str, **settings) -> dict:
        pretrain(tmp_path / name, seed=7, vae_steps=2, unet_steps=2, progress=False, **dict(run, **settings))
        return {k: v for k, v in _weights(tmp_path / name).items() if k.startswith("unet.")}

    alone, alone_noisy = weights("alone", video_pool_statistics=False), weights(
        "alone_noisy", video_pool_statistics=False, video_frame_scale_noise=0.5)
    pooled, pooled_noisy = weights("pooled"), weights("pooled_noisy", video_frame_scale_noise=0.5)
    assert all(torch.equal(alone[k], alone_noisy[k]) for k in alone)
    assert not all(torch.equal(pooled[k], pooled_noisy[k]) for k in pooled)

    norm = FrameGroupNorm(2, 4, affine=False)
    norm.num_frames = 2
    frame = torch.randn(1, 2, 18)
    frame = (frame - frame.mean(dim=-1, keepdim=True)).reshape(1, 4, 3, 3)  # each group's mean 0, so the pool's too
    out = norm(torch.cat([frame, 2 * frame]))
    assert torch.allclose(out[1], 2 * out[0], atol=1e-5)


def test_video_clip_timesteps_set_where_the_clip_steps_train(tmp_path):
    """The whole schedule written out gives the default run's weights; clip steps at the schedule's first timestep
    and at its last end in different places."""
    from tuneavideo.toymodel.pretrain import SD_SCHEDULER, pretrain

    run = dict(TINY_RUN, video_steps=2, video_image_share=0.0)  # clip steps only
    last = SD_SCHEDULER["num_train_timesteps"]

    def weights(name: str, **settings) -> dict:
        pretrain(tmp_path / name, seed=7, vae_steps=2, unet_steps=2, progress=False, **dict(run, **settings))
        return {k: v for k, v in _weights(tmp_path / name).items() if k.startswith("unet.")}

    default, whole = weights("default"), weights("whole", video_clip_timesteps=(0, last))
    low, high = weights("low", video_clip_timesteps=(0, 1)), weights("high", video_clip_timesteps=(last - 1, last))
    assert all(torch.equal(default[k], whole[k]) for k in default)
    assert not all(torch.equal(low[k], high[k]) for k in default)
    assert not all(torch.equal(low[k], default[k]) for k in default)


def test_frame_spread_penalty_is_the_mean_squared_log_std_ratio():
    """Hand-computed cases: frames of one video with the same statistics give 0; a frame at twice the other's scale,
    and a frame shifted by a constant, give the log ratios of their variances to the pooled variance."""
    import math

    from tuneavideo.toymodel.pretrain import frame_spread_penalty

    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 4)
    x = x - x.mean(dim=(2, 3), keepdim=True)  # each channel zero-mean
    var = float(x.var(unbiased=False))
    assert float(frame_spread_penalty(torch.cat([x, x]), 2, 1, eps=0)) == pytest.approx(0, abs=1e-10)
    # frame 2 = 2 x frame 1 (both zero-mean): pooled variance (1 + 4) / 2 of frame 1's
    expected = ((0.5 * math.log(1 / 2.5)) ** 2 + (0.5 * math.log(4 / 2.5)) ** 2) / 2
    assert float(frame_spread_penalty(torch.cat([x, 2 * x]), 2, 1, eps=0)) == pytest.approx(expected, rel=1e-5)
    # frame 2 = frame 1 + 3: the same own variance, pooled variance var + 3^2 / 4
    expected = (0.5 * math.log(var / (var + 2.25))) ** 2
    assert float(frame_spread_penalty(torch.cat([x, x + 3]), 2, 1, eps=0)) == pytest.approx(expected, rel=1e-5)
    # per group and per video: with two groups (a channel each), only the scaled channel's two frames contribute, and
    # a second video of alike frames adds zeros to the mean over videos, frames and groups
    scaled = torch.cat([x, x * torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)])
    expected = ((0.5 * math.log(1 / 2.5)) ** 2 + (0.5 * math.log(4 / 2.5)) ** 2) / 8
    assert float(frame_spread_penalty(torch.cat([scaled, x, x]), 2, 2, eps=0)) == pytest.approx(expected, rel=1e-5)


def test_frame_offset_penalty_is_the_mean_squared_offset_in_pooled_stds():
    """Hand-computed cases: frames with the same mean give 0 whatever their scales; a frame shifted by a constant c
    from a zero-mean frame sits c/2 from the pool's mean, whose variance is var + c^2 / 4; and per group and video."""
    from tuneavideo.toymodel.pretrain import frame_offset_penalty

    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 4)
    x = x - x.mean(dim=(2, 3), keepdim=True)  # each channel zero-mean
    var = float(x.var(unbiased=False))
    assert float(frame_offset_penalty(torch.cat([x, 3 * x]), 2, 1, eps=0)) == pytest.approx(0, abs=1e-10)
    expected = 1.5 ** 2 / (var + 2.25)  # both frames 1.5 from the pooled mean
    assert float(frame_offset_penalty(torch.cat([x, x + 3]), 2, 1, eps=0)) == pytest.approx(expected, rel=1e-5)
    assert float(frame_offset_penalty(torch.cat([x, x + 3]) * 7 - 2, 2, 1, eps=0)) == pytest.approx(expected, rel=1e-5)
    # two groups (a channel each): only the shifted channel contributes; a second video of alike frames adds zeros
    shifted = torch.cat([x, x + torch.tensor([0.0, 3.0]).view(1, 2, 1, 1)])
    var_1 = float(x[:, 1].var(unbiased=False))
    expected = 2 * 1.5 ** 2 / (var_1 + 2.25) / 8
    assert float(frame_offset_penalty(torch.cat([shifted, x, x]), 2, 2, eps=0)) == pytest.approx(expected, rel=1e-5)


def test_video_phase_norms_pool_over_each_clip_as_one_wide_image():
    """The norms the video phase pools (the inflated UNet's) normalise a clip of f frames as one image of the f frames
    side by side: the plain GroupNorm of that image is the reference."""
    from diffusers import UNet2DConditionModel

    from tuneavideo.models import FrameGroupNorm, TuneAVideoUNet, pool_norms_over_frames

    torch.manual_seed(0)
    config = dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                  cross_attention_dim=16, attention_head_dim=2,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    unet = UNet2DConditionModel(**config)
    names = {n for n, m in TuneAVideoUNet.from_unet2d(unet).named_modules() if isinstance(m, FrameGroupNorm)}
    norms = pool_norms_over_frames(unet)
    assert {n for n, m in unet.named_modules() if isinstance(m, FrameGroupNorm)} == names and len(norms) == len(names)
    norm, frames = norms[0], 4
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2 * frames, norm.num_channels, 5, 6) * torch.rand(2 * frames, 1, 1, 1) * 3  # frames of other scales
    norm.num_frames = frames
    pooled = norm(x)
    wide = torch.cat(list(x.view(2, frames, -1, 5, 6).unbind(1)), dim=-1)  # (2, c, 5, 6 f): each clip side by side
    reference = torch.nn.functional.group_norm(wide, norm.num_groups, norm.weight, norm.bias, norm.eps)
    reference = torch.stack(reference.split(6, dim=-1), dim=1).flatten(0, 1)  # ((2 f), c, 5, 6)
    torch.testing.assert_close(pooled, reference, rtol=1e-5, atol=1e-5)
    norm.num_frames = 1
    assert not torch.allclose(norm(x), reference, atol=1e-3)


def test_frozen_text_encoder_is_saved_as_initialised(tmp_path):
    import tempfile
    from dataclasses import replace

    from safetensors.torch import load_file

    from tuneavideo.toymodel.pretrain import FULL, build_models, pretrain
    from tuneavideo.toymodel.tokenizer import load_tokenizer, save_tokenizer_files

    tiny = TINY_RUN
    pretrain(tmp_path / "toy", seed=5, vae_steps=1, unet_steps=3, progress=False, train_text_encoder=False, **tiny)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(save_tokenizer_files(Path(tmp) / "tok"))
    torch.manual_seed(5)  # what the run does before building its networks
    _, text_encoder, unet = build_models(replace(FULL, **tiny), tokenizer)
    saved = load_file(tmp_path / "toy" / "text_encoder" / "model.safetensors")
    initial = text_encoder.state_dict()
    assert all(torch.equal(saved[k], initial[k]) for k in saved)
    trained = load_file(tmp_path / "toy" / "unet" / "diffusion_pytorch_model.safetensors")
    assert not all(torch.equal(trained[k], v) for k, v in unet.state_dict().items())


def test_unet_attention_levels_follow_the_config():
    import tempfile
    from dataclasses import replace

    from tuneavideo.toymodel.pretrain import FAST, build_models
    from tuneavideo.toymodel.tokenizer import load_tokenizer, save_tokenizer_files

    small = dict(vae_channels=(8, 8), vae_groups=4, unet_channels=(16, 32, 32), unet_groups=8, unet_heads=2,
                 text_width=16, text_layers=1, text_heads=2)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(save_tokenizer_files(Path(tmp) / "tok"))
    _, _, unet = build_models(replace(FAST, **small, unet_attention=(False, True, False)), tokenizer)
    assert unet.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    assert unet.config.up_block_types == ("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    assert unet.config.sample_size == 32  # two VAE levels: one downsampling
    with pytest.raises(ValueError, match="unet_attention names 2 levels, unet_channels 3"):
        build_models(replace(FAST, **small, unet_attention=(True, False)), tokenizer)


def test_latent_object_mask_marks_the_object_and_its_neighbours():
    """The object-weighted loss's mask: 1 on every latent pixel whose 4x4 image patch holds object pixels, grown by
    one latent pixel, 0 elsewhere (checked against the rendered object, pixel by pixel)."""
    from dataclasses import replace

    from tuneavideo.toymodel.data import render_batch
    from tuneavideo.toymodel.pretrain import FAST, _encode_dataset, _Log, build_models
    from tuneavideo.toymodel.tokenizer import load_tokenizer, save_tokenizer_files

    config = replace(FAST, vae_channels=(8, 8, 8), vae_groups=4, unet_channels=(16, 32, 32), unet_groups=8,
                     unet_heads=2, text_width=16, text_layers=1, text_heads=2, num_scenes=6)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(save_tokenizer_files(Path(tmp) / "tok"))
        torch.manual_seed(0)
        vae, _, _ = build_models(config, tokenizer)
    rng = np.random.default_rng(3)
    _, _, _, _, mask = _encode_dataset(vae.eval(), config, np.random.default_rng(3), _Log(False, 0.0))
    scenes = [training_scene(rng) for _ in range(config.num_scenes)]  # the same draws as the cache made
    _, pixels = render_batch(scenes)
    assert mask.shape == (config.num_scenes, 1, 16, 16)
    for scene_mask, object_pixels in zip(mask[:, 0].numpy(), pixels[:, 0]):
        touched = object_pixels.reshape(16, 4, 16, 4).max(axis=(1, 3)) > 0
        expected = np.zeros_like(touched)
        for y, x in zip(*np.nonzero(touched)):
            expected[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = True
        assert touched.any() and (scene_mask.astype(bool) == expected).all()


@pytest.mark.parametrize("prediction_type, gamma, floor", [("epsilon", 5.0, 0.0), ("v_prediction", 5.0, 1.0),
                                                            ("v_prediction", 0.0, 0.0), ("epsilon", 0.0, 0.5)])
def test_loss_weights_weight_the_implied_clean_latent_as_documented(prediction_type, gamma, floor):
    """weight(t) x squared prediction error == max(min(SNR, gamma), floor) x squared error of the x0 that the
    prediction implies, checked by recovering x0 from a perturbed prediction with the schedule's own algebra."""
    from dataclasses import replace

    from diffusers import DDPMScheduler

    from tuneavideo.toymodel.pretrain import FULL, loss_weights, scheduler_config

    config = replace(FULL, prediction_type=prediction_type, min_snr_gamma=gamma, x0_weight_floor=floor)
    scheduler = DDPMScheduler(**{k: v for k, v in scheduler_config(prediction_type).items()
                                 if k not in ("skip_prk_steps", "set_alpha_to_one")})
    weights = loss_weights(scheduler.alphas_cumprod, config)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64), torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64)
    for t in (0, 50, 200, 400, 650, 999):
        a = scheduler.alphas_cumprod[t].double()
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0 if prediction_type == "v_prediction" else noise
        output = target + 0.01 * torch.randn(target.shape, generator=gen, dtype=torch.float64)
        if prediction_type == "v_prediction":
            x0_hat = a.sqrt() * x_t - (1 - a).sqrt() * output
        else:
            x0_hat = (x_t - (1 - a).sqrt() * output) / a.sqrt()
        snr = float(a / (1 - a))
        x0_weight = max(min(snr, gamma) if gamma else snr, floor)
        assert float(weights[t]) * float((output - target).square().sum()) == pytest.approx(
            x0_weight * float((x0_hat - x0).square().sum()), rel=1e-4), t
    # the shipped settings before v-prediction: epsilon MSE clipped at SNR 5, untouched at high noise
    if (prediction_type, gamma, floor) == ("epsilon", 5.0, 0.0):
        assert float(weights[999]) == 1.0 and float(weights[0]) < 0.01


def test_v_prediction_run_writes_a_v_prediction_scheduler(tmp_path):
    from diffusers import StableDiffusionPipeline

    from tuneavideo.loading import load_base
    from tuneavideo.toymodel.pretrain import pretrain

    tiny = TINY_RUN
    pretrain(tmp_path / "v", seed=1, vae_steps=1, unet_steps=2, progress=False, prediction_type="v_prediction",
             x0_weight_floor=1.0, **tiny)
    written = json.loads((tmp_path / "v" / "scheduler" / "scheduler_config.json").read_text())
    assert written["prediction_type"] == "v_prediction" and written["beta_schedule"] == "scaled_linear"
    assert load_base(tmp_path / "v").scheduler_config["prediction_type"] == "v_prediction"
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "v", local_files_only=True)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="prediction_type"):
        pretrain(tmp_path / "x", vae_steps=1, unet_steps=1, progress=False, prediction_type="sample", **tiny)


def test_timestep_draws_with_a_high_noise_share():
    """No share: exactly ``torch.randint``'s draws (older runs reproduce). Share s: the chance of t >= 500 is
    (1 + s) / 2, every draw stays in [0, 1000), and s = 1 draws only from the noisier half."""
    from dataclasses import replace

    from tuneavideo.toymodel.pretrain import FULL, draw_timesteps

    plain = replace(FULL, unet_batch=4096, high_noise_share=0.0)
    torch.testing.assert_close(draw_timesteps(plain, 1000, torch.Generator().manual_seed(5)),
                               torch.randint(0, 1000, (4096,), generator=torch.Generator().manual_seed(5)))
    for share in (0.5, 1.0):
        t = draw_timesteps(replace(plain, high_noise_share=share), 1000, torch.Generator().manual_seed(5))
        assert 0 <= int(t.min()) and int(t.max()) < 1000
        assert abs((t >= 500).float().mean().item() - (1 + share) / 2) < 0.03
    assert int(draw_timesteps(replace(plain, high_noise_share=1.0), 1000, torch.Generator().manual_seed(6)).min()) >= 500


def test_clip_noise_shares_the_drawn_part_of_its_variance_between_a_clips_frames():
    """Share 0: exactly ``torch.randn``'s draws (older runs reproduce). Share s: unit variance per element, and two
    frames of one clip correlate by E[rho] = s / 2 (rho uniform in [0, s]); frames of different clips not at all."""
    from tuneavideo.toymodel.pretrain import clip_noise

    torch.testing.assert_close(clip_noise(3, 4, (2, 5, 5), 0.0, torch.Generator().manual_seed(1)),
                               torch.randn((12, 2, 5, 5), generator=torch.Generator().manual_seed(1)))
    clips, frames = 4000, 2
    for share in (0.5, 1.0):
        noise = clip_noise(clips, frames, (4, 4, 4), share, torch.Generator().manual_seed(2)).view(clips, frames, -1)
        assert noise.shape == (clips, frames, 64)
        assert abs(noise.var().item() - 1) < 0.02
        same_clip = (noise[:, 0] * noise[:, 1]).mean().item()
        other_clip = (noise[:-1, 0] * noise[1:, 1]).mean().item()
        assert abs(same_clip - share / 2) < 0.02 and abs(other_clip) < 0.02
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        clip_noise(1, 2, (1,), 1.5, torch.Generator())


def test_timestep_jitter_moves_each_frame_within_its_bound_and_the_schedule():
    """Jitter 0: the timesteps unchanged and nothing drawn (older runs reproduce). Jitter j: every move in [-j, j],
    both ends reached, mean move near 0, and the result clamped to [0, 1000)."""
    from tuneavideo.toymodel.pretrain import jitter_timesteps

    gen = torch.Generator().manual_seed(3)
    timesteps = torch.full((20000,), 500)
    assert torch.equal(jitter_timesteps(timesteps, 0, 1000, gen), timesteps)
    assert torch.equal(torch.randint(10, (5,), generator=gen),
                       torch.randint(10, (5,), generator=torch.Generator().manual_seed(3)))
    moves = jitter_timesteps(timesteps, 100, 1000, gen) - 500
    assert int(moves.min()) == -100 and int(moves.max()) == 100 and abs(moves.float().mean().item()) < 2
    edges = jitter_timesteps(torch.tensor([0, 999] * 500), 100, 1000, gen)
    assert int(edges.min()) == 0 and int(edges.max()) == 999
    with pytest.raises(ValueError, match="at least 0"):
        jitter_timesteps(timesteps, -1, 1000, gen)


def test_film_conditioning_is_a_standard_unet_that_inflates_exactly(tmp_path):
    """``unet_time_scale_shift="scale_shift"``: the saved UNet says so in its config, loads with diffusers, and its
    inflation equals it on identical frames."""
    from tuneavideo.loading import load_base
    from tuneavideo.models import TuneAVideoUNet
    from tuneavideo.toymodel.pretrain import pretrain

    pretrain(tmp_path / "film", seed=2, vae_steps=1, unet_steps=2, progress=False, unet_time_scale_shift="scale_shift",
             high_noise_share=0.5, **TINY_RUN)
    assert json.loads((tmp_path / "film" / "unet" / "config.json").read_text())["resnet_time_scale_shift"] == "scale_shift"
    base = load_base(tmp_path / "film")
    size = base.unet.config.sample_size
    torch.manual_seed(0)
    frame, context = torch.randn(1, 4, size, size), torch.randn(1, 16, base.unet.config.cross_attention_dim)
    with torch.no_grad():
        image = base.unet(frame, 700, context).sample
        video = TuneAVideoUNet.from_unet2d(base.unet)(frame.unsqueeze(2).expand(-1, -1, 3, -1, -1), 700, context).sample
    for i in range(3):
        torch.testing.assert_close(video[:, :, i], image, atol=1e-5, rtol=1e-4)


def test_pretrain_command_line_sets_any_config_field():
    from tuneavideo.toymodel.pretrain import main, parse_settings

    assert parse_settings(["unet_time_scale_shift=scale_shift", "high_noise_share=0.5", "unet_channels=[32,64,128]",
                           "unet_attention=[false,true,false]", "max_minutes=null"]) == {
        "unet_time_scale_shift": "scale_shift", "high_noise_share": 0.5, "unet_channels": (32, 64, 128),
        "unet_attention": (False, True, False), "max_minutes": None}
    for bad in (["unet_width=64"], ["high_noise_share"], ["unet_steps=many"], ["lr=true"], ["unet_channels=7"],
                ["unet_time_scale_shift=film"], ["prediction_type=x0"], ["video_norm_penalty=null"],
                ["video_clip_timesteps=null"], ["lr=NaN"], ["video_frame_scale_noise=Infinity"],
                ["video_clip_timesteps=[0,Infinity]"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["--output", "unused", "--set", *bad])
        assert exit_info.value.code == 2


def test_training_report_command_reproduces_the_run_settings():
    """TRAINING.md's command: the shipped defaults need no flags; any other run's settings come back from its
    flags through the command line's own parser."""
    from dataclasses import asdict, replace

    from tuneavideo.toymodel.pretrain import FULL, parse_settings
    from tuneavideo.toymodel.report import reproduce_flags

    assert reproduce_flags({"config": asdict(FULL), "device": "cpu"}) == []
    changed = replace(FULL, seed=4, unet_steps=40000, unet_channels=(48, 96, 128), unet_time_scale_shift="scale_shift",
                      high_noise_share=0.5, snapshot_dir="/tmp/snap")
    flags = reproduce_flags({"config": json.loads(json.dumps(asdict(changed))), "device": "cuda:0"})
    assert flags[-1] == "--device cuda" and "--seed 4" in flags and "--unet-steps 40000" in flags
    settings = parse_settings([f.split(" ", 1)[1] for f in flags if f.startswith("--set ")])
    assert replace(FULL, seed=4, unet_steps=40000, snapshot_dir="/tmp/snap", **settings) == changed


def test_the_bundled_models_training_md_command_matches_its_recorded_settings():
    """The pretrain command in the bundled TRAINING.md carries exactly the flags its training.json needs against
    today's defaults: a default changed without rebundling (or a model bundled without its default) makes that
    command train another model, and fails here."""
    from tuneavideo.toymodel.report import reproduce_flags

    training = json.loads((BUNDLED / "training.json").read_text())
    text = (BUNDLED / "TRAINING.md").read_text()
    command = next(line for line in text.splitlines() if "-m tuneavideo.toymodel.pretrain --output" in line)
    words = command.split("--output", 1)[1].split()[1:]  # the flags after the output folder
    written = [" ".join(words[i:i + 2]) if i + 1 < len(words) and not words[i + 1].startswith("--") else words[i]
               for i in range(len(words)) if words[i].startswith("--")]
    assert sorted(written) == sorted(reproduce_flags(training)), (command, reproduce_flags(training))


@pytest.mark.parametrize("setting, message", [
    ("video_frames=3", "video_frames 3 must be at least 2 and divide unet_batch 32"),
    ("unet_from=/nonexistent", "unet_from /nonexistent: no unet/config.json"),
    ("vae_from=/nonexistent", "vae_from /nonexistent: no vae/config.json"),
    ("unet_time_scale_shift=film", "unet_time_scale_shift must be 'default' or 'scale_shift'"),
    ("video_noise_sharing=2", "video_noise_sharing must be in [0, 1]"),
    ("video_timestep_jitter=-5", "video_timestep_jitter must be at least 0"),
    ("video_norm_penalty=-1", "video_norm_penalty must be at least 0"),
    ("video_norm_offset_penalty=-1", "video_norm_offset_penalty must be at least 0"),
    ("video_norm_penalty_max_size=-4", "video_norm_penalty_max_size must be at least 0"),
    ("video_frame_scale_noise=-0.1", "video_frame_scale_noise must be at least 0"),
    ("video_clip_timesteps=[500,500]", "video_clip_timesteps must be [first, last)"),
    ("video_clip_timesteps=[0,1001]", "video_clip_timesteps must be [first, last)"),
    ("video_clip_timesteps=[0,500,1000]", "video_clip_timesteps must be [first, last)"),
])
def test_settings_that_would_fail_in_a_later_phase_are_usage_errors(tmp_path, capsys, setting, message):
    from tuneavideo.toymodel.pretrain import main

    with pytest.raises(SystemExit) as stop:
        main(["--output", str(tmp_path / "run"), "--set", setting])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before any work
