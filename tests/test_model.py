"""The inflated UNet against independent references: naive attention loops, the image model, SD 1.5 counts."""

import json
import math

import pytest
import torch
from diffusers.models.attention_processor import Attention
from tiny import reference_config, tiny_unet

from tuneavideo.models import FrameGroupNorm, SparseCausalAttnProcessor, TuneAVideoUNet, VideoTransformerBlock, WeightLoadError



@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def naive_attention(query_in, key_in, attn: Attention) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V per head, then the output projection, for one query set (n, c)."""
    q, k, v = attn.to_q(query_in), attn.to_k(key_in), attn.to_v(key_in)
    heads = attn.heads
    d = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        qh, kh, vh = (x[:, h * d:(h + 1) * d] for x in (q, k, v))
        weights = torch.softmax(qh @ kh.T / math.sqrt(d), dim=-1)
        outs.append(weights @ vh)
    return attn.to_out[0](torch.cat(outs, dim=-1))


def test_sparse_causal_attention_matches_naive_loop():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8, processor=SparseCausalAttnProcessor())
    b, f, n = 2, 4, 6
    x = torch.randn(b * f, n, 16)
    out = attn(x, num_frames=f).view(b, f, n, 16)
    frames = x.view(b, f, n, 16)
    for bi in range(b):
        for i in range(f):
            keys = torch.cat([frames[bi, 0], frames[bi, max(i - 1, 0)]])  # frame 0 and frame i-1
            torch.testing.assert_close(out[bi, i], naive_attention(frames[bi, i], keys, attn), atol=1e-5, rtol=1e-5)


def naive_block(block: VideoTransformerBlock, x: torch.Tensor, context: torch.Tensor, f: int) -> torch.Tensor:
    """The Tune-A-Video transformer block written as loops over frames and positions."""
    b = x.shape[0] // f
    frames = x.view(b, f, *x.shape[1:]).clone()
    for bi in range(b):
        normed = [block.norm1(frames[bi, i]) for i in range(f)]
        attn1 = [naive_attention(normed[i], torch.cat([normed[0], normed[max(i - 1, 0)]]), block.attn1) for i in range(f)]
        for i in range(f):
            h = frames[bi, i] + attn1[i]
            h = h + naive_attention(block.norm2(h), context[bi * f + i], block.attn2)
            frames[bi, i] = h + block.ff(block.norm3(h))
        for p in range(frames.shape[2]):  # temporal attention at every spatial position
            series = frames[bi, :, p]  # (f, c)
            normed_t = block.norm_temp(series)
            frames[bi, :, p] = series + naive_attention(normed_t, normed_t, block.attn_temp)
    return frames.view_as(x)


def test_video_transformer_block_matches_naive_loops():
    video = TuneAVideoUNet.from_unet2d(tiny_unet())
    block = video.down_blocks[0].attentions[0].transformer_blocks[0]
    assert isinstance(block, VideoTransformerBlock)
    torch.manual_seed(1)
    torch.nn.init.normal_(block.attn_temp.to_out[0].weight, std=0.2)  # make the temporal branch count
    torch.nn.init.normal_(block.attn_temp.to_out[0].bias, std=0.2)
    b, f, n, c = 2, 3, 5, 32
    x = torch.randn(b * f, n, c)
    context = torch.randn(b * f, 7, 32)
    out = block(x, encoder_hidden_states=context, cross_attention_kwargs={"num_frames": f})
    torch.testing.assert_close(out, naive_block(block, x, context, f), atol=1e-5, rtol=1e-5)


def test_frame_group_norm_pools_over_all_frames():
    torch.manual_seed(0)
    norm = FrameGroupNorm(4, 8)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    b, f = 2, 3
    x = torch.randn(b * f, 8, 5, 5)
    norm.num_frames = f
    video = x.view(b, f, 4, 2, 5, 5)  # (b, f, groups, c/G, h, w)
    mean = video.mean(dim=(1, 3, 4, 5), keepdim=True)
    var = video.var(dim=(1, 3, 4, 5), unbiased=False, keepdim=True)
    expected = ((video - mean) / torch.sqrt(var + norm.eps)).reshape(b * f, 8, 5, 5)
    expected = expected * norm.weight.view(1, 8, 1, 1) + norm.bias.view(1, 8, 1, 1)
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)


def test_identical_frames_reproduce_the_image_model():
    image = tiny_unet()
    torch.manual_seed(2)
    x = torch.randn(2, 4, 8, 8)
    context = torch.randn(2, 7, 32)
    expected = image(x, 500, context).sample
    video = TuneAVideoUNet.from_unet2d(image)
    frames = x[:, :, None].expand(-1, -1, 5, -1, -1)  # (b, c, f, h, w), the same frame 5 times
    out = video(frames, 500, context).sample
    assert out.shape == (2, 4, 5, 8, 8)
    for i in range(5):
        torch.testing.assert_close(out[:, :, i], expected, atol=1e-5, rtol=1e-4)


def test_last_frame_changes_first_frame_output():
    video = TuneAVideoUNet.from_unet2d(tiny_unet())
    torch.manual_seed(3)
    x = torch.randn(1, 4, 4, 8, 8)
    context = torch.randn(1, 7, 32)
    before = video(x, 10, context).sample
    x2 = x.clone()
    x2[:, :, -1] += 1.0
    after = video(x2, 10, context).sample
    # Frame 0 attends only to itself, and attn_temp is zero at init: only the pooled GroupNorm links them.
    assert (after[:, :, 0] - before[:, :, 0]).abs().max() > 1e-4


def test_batch_entries_are_independent():
    video = TuneAVideoUNet.from_unet2d(tiny_unet())
    torch.manual_seed(4)
    x = torch.randn(2, 4, 3, 8, 8)
    context = torch.randn(2, 7, 32)
    both = video(x, torch.tensor([10, 700]), context).sample
    second = video(x[1:], torch.tensor([700]), context[1:]).sample
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=1e-4)


def test_parameter_names_are_the_image_models_plus_temporal():
    image = tiny_unet()
    names2d = set(image.state_dict())
    video = TuneAVideoUNet.from_unet2d(image)
    names = set(video.state_dict())
    assert names2d <= names
    extra = names - names2d
    assert extra and all(".attn_temp." in k or ".norm_temp." in k for k in extra)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_out.0.bias" in extra


def test_sd15_architecture_counts(sd15_unet_config):
    with torch.device("meta"):
        video = TuneAVideoUNet.from_config(sd15_unet_config)
    total = sum(p.numel() for p in video.parameters())
    new = sum(p.numel() for n, p in video.named_parameters() if "_temp." in n)
    # REFERENCE.md section 2: SD-1.x inflated 909.1 M parameters, 49.6 M of them new.
    assert round(total / 1e6, 1) == 909.1
    assert round(new / 1e6, 1) == 49.6


def test_reference_unet_folder_loads(tmp_path):
    image = tiny_unet()
    video = TuneAVideoUNet.from_unet2d(image)
    torch.manual_seed(5)
    for name, p in video.named_parameters():
        if "attn_temp.to_out" in name:
            p.normal_(std=0.1)
    (tmp_path / "config.json").write_text(json.dumps(reference_config(image)))
    torch.save(video.state_dict(), tmp_path / "diffusion_pytorch_model.bin")
    loaded = TuneAVideoUNet.from_pretrained(tmp_path)
    x, context = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 7, 32)
    torch.testing.assert_close(loaded(x, 100, context).sample, video(x, 100, context).sample)

    state = video.state_dict()
    state.pop("mid_block.attentions.0.transformer_blocks.0.attn_temp.to_q.weight")
    torch.save(state, tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(WeightLoadError, match="attn_temp.to_q.weight"):
        TuneAVideoUNet.from_pretrained(tmp_path)


def test_own_folder_round_trip(tmp_path):
    video = TuneAVideoUNet.from_unet2d(tiny_unet())
    video.save_pretrained(tmp_path)
    loaded = TuneAVideoUNet.from_pretrained(tmp_path)
    x, context = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 7, 32)
    torch.testing.assert_close(loaded(x, 3, context).sample, video(x, 3, context).sample)


def test_other_block_types_are_refused():
    with pytest.raises(ValueError, match="cannot inflate"):
        TuneAVideoUNet(
            block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        )


def test_per_frame_attention_mode_is_the_image_models_attn1():
    video = TuneAVideoUNet.from_unet2d(tiny_unet())
    block = video.down_blocks[0].attentions[0].transformer_blocks[0]
    torch.manual_seed(6)
    x = torch.randn(2 * 3, 5, 32)
    video.set_frame_attention("per-frame")
    out = block.attn1(x, num_frames=3)
    for i in range(6):  # each frame attends to its own tokens only
        torch.testing.assert_close(out[i], naive_attention(x[i], x[i], block.attn1), atol=1e-5, rtol=1e-5)
    video.set_frame_attention("sparse-causal")
    assert not torch.allclose(block.attn1(x, num_frames=3), out)


def test_image_model_mode_is_the_image_unet_frame_by_frame():
    image = tiny_unet()
    torch.manual_seed(7)
    x = torch.randn(1, 4, 3, 8, 8)  # three different frames
    context = torch.randn(1, 7, 32)
    expected = [image(x[:, :, i], 50, context).sample for i in range(3)]
    video = TuneAVideoUNet.from_unet2d(image)
    video.set_frame_attention("per-frame")
    video.pool_norm_over_frames = False
    out = video(x, 50, context).sample
    for i in range(3):
        torch.testing.assert_close(out[:, :, i], expected[i], atol=1e-5, rtol=1e-4)
