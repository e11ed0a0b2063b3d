"""Videos longer than the tuned clip (tuneavideo.windows): windows against the unwindowed model, the image model and
a window-free reference, on tiny real models; the blend weights; the command line's frame ranges and their errors."""

import json

import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import Attention
from tiny import SD_SCHEDULER, tiny_text_encoder, tiny_tokenizer, tiny_unet, tiny_vae, tune_toy_run

from tuneavideo.cli import main
from tuneavideo.config import ConfigError, SampleConfig
from tuneavideo.control import build_controller, record_attention
from tuneavideo.inversion import ddim_invert, null_text_optimise
from tuneavideo.models import SparseCausalAttnProcessor, TuneAVideoUNet, VideoTransformerBlock
from tuneavideo.pipeline import TuneAVideoPipeline
from tuneavideo.runfolder import INVERSIONS, frames_key
from tuneavideo.video import probe_video
from tuneavideo.windows import FrameWindows, WindowAnchors, WindowedUNet

PROMPT = "a red circle moving right on blue sky"


def video_unet(temporal: bool) -> TuneAVideoUNet:
    """The inflated tiny UNet. ``temporal``: attn_temp's output projection random (as after tuning), so temporal
    attention mixes frames; else zero (as inflated): only sparse-causal attention and the pooled norms do."""
    unet = TuneAVideoUNet.from_unet2d(tiny_unet(), seed=0).eval().requires_grad_(False)
    if temporal:
        torch.manual_seed(1)
        for block in unet.modules():
            if isinstance(block, VideoTransformerBlock):
                torch.nn.init.normal_(block.attn_temp.to_out[0].weight, std=0.3)
    return unet


def window_free(unet: TuneAVideoUNet) -> TuneAVideoUNet:
    """No mixing of frames but sparse-causal attention: per-frame norms and a zero temporal attention."""
    unet.pool_norm_over_frames = False
    return unet


def tiny_pipe(unet: TuneAVideoUNet) -> TuneAVideoPipeline:
    scheduler = DDIMScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k != "skip_prk_steps"})
    pipe = TuneAVideoPipeline(tiny_vae(), tiny_text_encoder(), tiny_tokenizer(), unet, scheduler)
    for module in (pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    return pipe


# ------------------------------------------------------------------------------------------------ the windows


@pytest.mark.parametrize("frames, size, overlap", [(11, 4, 1), (11, 3, 0), (16, 5, 2), (9, 4, 3), (64, 16, 4), (7, 6, 5)])
def test_blend_weights_sum_to_one_per_frame(frames, size, overlap):
    windows = FrameWindows(size, overlap)
    spans = windows.spans(frames)
    weights = windows.weights(frames)
    assert spans[0].start == 0 and spans[-1].stop == frames and all(len(span) == size for span in spans)
    assert all(b.start <= a.stop - overlap for a, b in zip(spans, spans[1:]))  # neighbours share at least the overlap
    torch.testing.assert_close(weights.sum(0), torch.ones(frames), rtol=0, atol=1e-6)
    for k, span in enumerate(spans):
        inside = torch.zeros(frames, dtype=torch.bool)
        inside[span.start:span.stop] = True
        assert (weights[k][inside] > 0).all() and (weights[k][~inside] == 0).all()
    alone = (weights > 0).sum(0) == 1
    assert (weights.amax(0)[alone] == 1).all()  # a frame in one window takes that window's output as it is
    for k, (a, b) in enumerate(zip(spans, spans[1:])):  # ramps across an overlap of two: down for the earlier, up for the later
        shared = slice(b.start, a.stop)
        if ((weights[:, shared] > 0).sum(0) == 2).all():
            assert (weights[k, shared].diff() < 0).all() and (weights[k + 1, shared].diff() > 0).all()


def test_window_resolution_and_errors():
    assert FrameWindows.resolve(0, -1, 16, 16) is None and FrameWindows.resolve(24, 6, 16, 20) is None
    assert FrameWindows.resolve(0, -1, 16, 64) == FrameWindows(16, 4)  # the tuned length, a quarter overlap
    assert FrameWindows.resolve(8, 0, 16, 64) == FrameWindows(8, 0) and FrameWindows.resolve(0, -1, None, 64) is None
    assert FrameWindows(8, 2).spans(5) == [range(5)]
    with pytest.raises(ConfigError, match="overlap 4 must be smaller than the window of 4"):
        FrameWindows.resolve(0, 4, 4, 10)
    for window, overlap, words in ((-1, -1, "window -1"), (4, 4, "overlap 4"), (0, -2, "overlap -2")):
        with pytest.raises(ConfigError, match=words):
            from tuneavideo.config import RunConfig

            config = RunConfig()
            config.sample.window, config.sample.overlap = window, overlap
            config.validate()


# --------------------------------------------------------------------------------------------- the model


@torch.no_grad()
def test_window_covering_the_clip_is_the_unwindowed_model():
    """A window at least as long as the clip: the pipeline, DDIM inversion and null-text give exactly today's result."""
    pipe = tiny_pipe(video_unet(temporal=True))
    latents = torch.randn(1, 4, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    context = pipe.encode_prompt([""])
    for windows in (FrameWindows(5, 2), FrameWindows(9, 0)):
        ours = ddim_invert(pipe.unet, pipe.scheduler, latents, context, 3, windows=windows)
        assert torch.equal(ours, ddim_invert(pipe.unet, pipe.scheduler, latents, context, 3))
        video = pipe(PROMPT, 5, 64, 64, 3, 5.0, "", 0.0, None, ours, output_type="latent", windows=windows)
        assert torch.equal(video, pipe(PROMPT, 5, 64, 64, 3, 5.0, "", 0.0, None, ours, output_type="latent"))
    # not vacuous: shorter windows change this model's result (its temporal attention sees fewer frames)
    short = ddim_invert(pipe.unet, pipe.scheduler, latents, context, 3, windows=FrameWindows(3, 1))
    assert (short - ours).abs().max() > 1e-3


@torch.no_grad()
def test_identical_frames_windowed_model_is_the_image_model():
    """Nine identical frames in windows of 4 (overlap 1): every frame is the image UNet's output on that frame."""
    image = tiny_unet()
    unet = TuneAVideoUNet.from_unet2d(image).eval()
    frame = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(1))
    video = frame[:, :, None].expand(-1, -1, 9, -1, -1).contiguous()  # (1, c, 9, h, w)
    out = WindowedUNet(unet, FrameWindows(4, 1))(video, 10, context).sample
    expected = image(frame, 10, context).sample
    for f in range(9):
        torch.testing.assert_close(out[:, :, f], expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_windowed_sparse_causal_attention_is_exact():
    """One attention layer: each window's frames, with frame 0 and the frame before the window from the windows that
    computed them, attend exactly as in the whole video (2 videos, windows of 4 sharing 1, the last one moved back)."""
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8, processor=SparseCausalAttnProcessor())
    batch, frames, tokens = 2, 11, 6
    x = torch.randn(batch * frames, tokens, 16)
    whole = attn(x, num_frames=frames).view(batch, frames, tokens, 16)
    video = x.view(batch, frames, tokens, 16)
    spans = FrameWindows(4, 1).spans(frames)
    anchors = WindowAnchors(spans)
    for index, span in enumerate(spans):
        anchors.begin(index)
        part = video[:, span.start:span.stop].reshape(-1, tokens, 16)
        out = attn(part, num_frames=len(span), frame_window=anchors).view(batch, len(span), tokens, 16)
        torch.testing.assert_close(out, whole[:, span.start:span.stop], atol=1e-6, rtol=1e-6)
        if span.start > 0:  # not vacuous: the window alone, frame 0 and frame i - 1 taken from inside it, differs
            alone = attn(part, num_frames=len(span)).view(batch, len(span), tokens, 16)
            assert (alone[:, 0] - whole[:, span.start]).abs().max() > 1e-3


@pytest.mark.parametrize("size, overlap", [(4, 1), (3, 0), (5, 2), (4, 3)])
@torch.no_grad()
def test_windowed_unet_is_exact_where_only_sparse_causal_attention_mixes_frames(size, overlap):
    """With per-frame norms and a zero temporal attention, every frame depends on the frames before it only through
    sparse-causal attention: the windowed UNet equals the whole-video UNet at every layer, so at its output."""
    unet = window_free(video_unet(temporal=False))
    sample = torch.randn(2, 4, 11, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1))
    whole = unet(sample, 10, context).sample
    torch.testing.assert_close(WindowedUNet(unet, FrameWindows(size, overlap))(sample, 10, context).sample, whole,
                               atol=2e-6, rtol=1e-5)


@torch.no_grad()
def test_temporal_layers_see_only_their_window():
    """With temporal attention and pooled norms, the frames only the first window holds are the UNet's output on
    that window alone."""
    unet = video_unet(temporal=True)
    sample = torch.randn(1, 4, 10, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(1))
    out = WindowedUNet(unet, FrameWindows(4, 1))(sample, 10, context).sample
    torch.testing.assert_close(out[:, :, :3], unet(sample[:, :, :4], 10, context).sample[:, :, :3], atol=1e-6, rtol=1e-6)
    assert (out[:, :, :3] - unet(sample, 10, context).sample[:, :, :3]).abs().max() > 1e-3


@torch.no_grad()
def test_controlled_edits_in_windows_match_the_whole_video():
    """P2P with a blend and FateZero's record and fusion, run in windows of 3 sharing 1 on a model where only
    sparse-causal attention mixes frames: the maps, masks and results are those of the whole video."""
    pipe = tiny_pipe(window_free(video_unet(temporal=False)))
    frames, steps, windows = 7, 3, FrameWindows(3, 1)
    noise = torch.randn(1, 4, frames, 8, 8, generator=torch.Generator().manual_seed(0))
    edit = "a blue circle moving right on blue sky"
    p2p = SampleConfig(num_inference_steps=steps, num_inversion_steps=steps, control="p2p", self_replace=0.7, blend=["circle"],
                       guidance_scale=5.0)

    def controlled(windows):
        controller = build_controller(pipe.tokenizer, p2p, PROMPT, edit, num_frames=frames, latent_size=(8, 8))
        return pipe([PROMPT, edit], frames, 64, 64, steps, 5.0, "", 0.0, None, noise, output_type="latent",
                    controller=controller, windows=windows)

    # windows batch the frames otherwise than the whole video: float32 rounding differs, through 3 guided steps
    torch.testing.assert_close(controlled(windows), controlled(None), atol=1e-4, rtol=1e-4)

    fatezero = SampleConfig(num_inference_steps=steps, num_inversion_steps=steps, inversion="negative-prompt",
                            control="fatezero", self_replace=0.7, blend=["circle"], guidance_scale=5.0)
    context = pipe.encode_prompt([PROMPT])
    results = []
    for w in (windows, None):
        inverted, record = record_attention(pipe.unet, pipe.scheduler, noise, context, pipe.tokenizer, fatezero, PROMPT,
                                            latent_size=(8, 8), windows=w)
        controller = build_controller(pipe.tokenizer, fatezero, PROMPT, edit, num_frames=frames, latent_size=(8, 8),
                                      record=record)
        results.append((inverted, record, pipe(edit, frames, 64, 64, steps, 5.0, "", 0.0, None, inverted, output_type="latent",
                                               controller=controller, windows=w)))
    (inv_w, rec_w, out_w), (inv, rec, out) = results
    assert rec_w.self_maps.keys() == rec.self_maps.keys() and rec_w.masks.keys() == rec.masks.keys() and rec.masks
    for key, maps in rec.self_maps.items():
        assert rec_w.self_maps[key].shape[0] == frames
        torch.testing.assert_close(rec_w.self_maps[key].float(), maps.float(), atol=2e-3, rtol=0)
    for step, mask in rec.masks.items():
        assert torch.equal(rec_w.masks[step], mask)
    torch.testing.assert_close(inv_w, inv, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_w, out, atol=1e-4, rtol=1e-4)


def test_null_text_in_windows_matches_the_whole_video():
    """Null-text optimisation through windowed UNet calls (the gradient flows through every window): the same
    embeddings as on the whole video, where only sparse-causal attention mixes frames."""
    pipe = tiny_pipe(window_free(video_unet(temporal=False)))
    latents = torch.randn(1, 4, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    context, empty = pipe.encode_prompt([PROMPT]), pipe.encode_prompt([""])
    found = []
    for windows in (FrameWindows(3, 1), None):
        trajectory = ddim_invert(pipe.unet, pipe.scheduler, latents, context, 2, return_trajectory=True, windows=windows)
        found.append(null_text_optimise(pipe.unet, pipe.scheduler, trajectory, context, empty, 5.0, inner_steps=2,
                                        windows=windows))
    torch.testing.assert_close(found[0], found[1], atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run tuned for 1 step on the first 4 frames of a rendered 10-frame toy clip (a folder of PNGs) with a tiny
    SD model; its config names the whole clip's folder."""
    return tune_toy_run(tmp_path_factory.mktemp("long"), rendered_frames=10, prompt=PROMPT)


def test_edit_all_frames_in_windows(run, tmp_path, capsys):
    """--all-frames edits the 10 frames of the source the run was tuned on (4 of them), in windows of the tuned length;
    the inversion is cached under its frames and windows, and a second edit reads it."""
    out = tmp_path / "all"
    assert main(["edit", str(run), "--prompt", "a green circle moving right on blue sky", "--all-frames", "--overlap", "1",
                 "--output", str(out)]) == 0
    assert probe_video(out / "a-green-circle-moving-right-on-blue-sky.mp4").num_frames == 10
    record = json.loads((out / "a-green-circle-moving-right-on-blue-sky.json").read_text())
    assert (record["num_frames"], record["start"], record["stride"]) == (10, 0, 1)
    assert record["frame_windows"] == {"window": 4, "overlap": 1}
    cached = list((run / INVERSIONS).glob(f"*-{frames_key(0, 1, 10, 4, 1)}.safetensors"))
    assert len(cached) == 1
    made = cached[0].stat().st_mtime_ns
    assert main(["edit", str(run), "--prompt", "a cat", "--num-frames", "5", "--start", "1", "--stride", "2",
                 "--window", "4", "--overlap", "1", "--output", str(tmp_path / "odd")]) == 0
    assert list((run / INVERSIONS).glob(f"*-{frames_key(1, 2, 5, 4, 1)}.safetensors"))
    assert main(["edit", str(run), "--prompt", "a cat", "--all-frames", "--overlap", "1", "--output", str(tmp_path / "again")]) == 0
    assert cached[0].stat().st_mtime_ns == made  # read, not made again


def fails(capsys, argv, *words):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and errors[0] == err[-1], err
    for word in words:
        assert word in errors[0], errors[0]


@pytest.mark.parametrize("flags, words", [
    (["--num-frames", "11"], ["has 10 frames", "11 frames"]),
    (["--start", "4", "--stride", "2", "--num-frames", "4"], ["has 10 frames", "from frame 4 need 11"]),
    (["--all-frames", "--start", "10"], ["--all-frames from frame 10", "only 10 frames"]),
    (["--all-frames", "--num-frames", "6"], ["--all-frames and --num-frames 6"]),
    (["--num-frames", "8", "--window", "4", "--overlap", "4"], ["overlap 4", "window of 4"]),
    (["--num-frames", "8", "--overlap", "5"], ["overlap 5", "window of 4 frames"]),
    (["--width", "64"], ["--width 64"]),
])
def test_frame_ranges_past_the_end_and_bad_windows_are_errors(run, tmp_path, capsys, flags, words):
    fails(capsys, ["edit", str(run), "--prompt", "a cat", "--output", str(tmp_path / "out"), *flags], *words)
    assert not (tmp_path / "out").exists()


def test_other_frames_need_the_tuned_video(run, tmp_path, capsys):
    moved = run.parent / "moved"
    (run.parent / "frames").rename(moved)
    try:
        fails(capsys, ["edit", str(run), "--prompt", "a cat", "--num-frames", "6", "--output", str(tmp_path)],
              "is not there", "--video")
        assert main(["edit", str(run), "--prompt", "a cat", "--num-frames", "6", "--video", str(moved),
                     "--output", str(tmp_path / "given")]) == 0
        assert probe_video(tmp_path / "given" / "a-cat.mp4").num_frames == 6
    finally:
        moved.rename(run.parent / "frames")
