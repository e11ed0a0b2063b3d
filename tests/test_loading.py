"""Loading the Stable Diffusion base: diffusers folders, single LDM-layout files, hub ids, shipped configs.

Everything runs offline on tiny real diffusers/transformers models. The single-file tests convert the tiny
diffusers weights to the original CompVis/LDM key layout with the inverse mapping written below (from the LDM
module layout, independently of diffusers' converter), so loading them back is a real round trip through the
other layout.
"""

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from conftest import SD15, need_shared
from tuneavideo.loading import CONFIGS_DIR, BaseModel, ModelLoadError, detect_sd_version, load_base

SKIING = [49406, 320, 786, 533, 14400, 49407]  # "a man is skiing" with SD's tokenizer

# ------------------------------------------------------------------------------------------------ tiny SD


def tiny_unet(sd2=False):
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        # like SD: the last down block and the first up block have no attention
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4, 4) if sd2 else 8,
        norm_num_groups=8,
        use_linear_projection=sd2,
        upcast_attention=sd2,
    ).eval()


def tiny_vae():
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).eval()


def tiny_text_encoder(sd2=False):
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="gelu" if sd2 else "quick_gelu",
        projection_dim=32,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    return CLIPTextModel(config).eval()


def tiny_sd(sd2=False):
    return tiny_unet(sd2), tiny_vae(), tiny_text_encoder(sd2)


def run_tiny(unet, vae, text_encoder) -> list[torch.Tensor]:
    """Outputs of the three modules on fixed inputs."""
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    context = torch.randn(2, 7, 32, generator=g)
    image = torch.randn(1, 3, 16, 16, generator=g)
    with torch.no_grad():
        return [
            unet(latents, 10, context).sample,
            vae.encode(image).latent_dist.mean,
            vae.decode(latents).sample,
            text_encoder(torch.tensor([SKIING])).last_hidden_state,
        ]


def assert_same_outputs(loaded: BaseModel, expected: list[torch.Tensor]):
    got = run_tiny(loaded.unet, loaded.vae, loaded.text_encoder)
    for name, a, b in zip(("unet", "vae.encode", "vae.decode", "text_encoder"), got, expected):
        assert torch.equal(a, b), name


def shipped_tokenizer(version="sd15"):
    folder = CONFIGS_DIR / version / "tokenizer"
    if version == "sd21":  # it keeps only its tokenizer_config.json: same BPE files as SD 1.5, pad "!"
        return CLIPTokenizer.from_pretrained(CONFIGS_DIR / "sd15" / "tokenizer", pad_token="!")
    return CLIPTokenizer.from_pretrained(folder)


def write_config_folder(root: Path, unet, vae, text_encoder, sd2=False) -> Path:
    """A diffusers-format config folder (no weights) describing the tiny model."""
    version = "sd21" if sd2 else "sd15"
    unet.save_config(root / "unet")
    vae.save_config(root / "vae")
    text_encoder.config.save_pretrained(root / "text_encoder")
    shutil.copytree(CONFIGS_DIR / version / "scheduler", root / "scheduler")
    shutil.copy(CONFIGS_DIR / version / "model_index.json", root / "model_index.json")
    (root / "tokenizer").mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(CONFIGS_DIR / "sd15" / "tokenizer" / name, root / "tokenizer" / name)
    if sd2:  # SD 2's tokenizer pads with "!"
        shutil.copy(CONFIGS_DIR / "sd21" / "tokenizer" / "tokenizer_config.json", root / "tokenizer")
    return root


def write_diffusers_folder(root: Path, unet, vae, text_encoder, sd2=False) -> Path:
    write_config_folder(root, unet, vae, text_encoder, sd2)
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text_encoder.save_pretrained(root / "text_encoder")
    return root


# ---------------------------------------------- diffusers -> original LDM keys (from the LDM module layout)

_LDM_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_LDM_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _ldm_resnet(rest):
    return ".".join([_LDM_RESNET[rest[0]], *rest[1:]])


def ldm_unet_key(key: str, config) -> str:
    """LDM's UNet is flat lists: input_blocks (conv_in, then per level `layers` x [resnet, attention] and a
    downsampler), middle_block [resnet, attention, resnet], output_blocks (per level `layers + 1` x
    [resnet, attention, upsampler]), out."""
    per_level = config.layers_per_block + 1
    module, _, leaf = key.rpartition(".")
    if module in _LDM_UNET_TOP:
        return f"{_LDM_UNET_TOP[module]}.{leaf}"
    p = key.split(".")
    if p[0] == "down_blocks":
        level = int(p[1])
        if p[2] == "downsamplers":
            return f"input_blocks.{(level + 1) * per_level}.0.op.{leaf}"
        block = 1 + level * per_level + int(p[3])
        if p[2] == "resnets":
            return f"input_blocks.{block}.0.{_ldm_resnet(p[4:])}"
        return f"input_blocks.{block}.1.{'.'.join(p[4:])}"
    if p[0] == "mid_block":
        if p[1] == "resnets":
            return f"middle_block.{2 * int(p[2])}.{_ldm_resnet(p[3:])}"
        return f"middle_block.1.{'.'.join(p[3:])}"
    if p[0] == "up_blocks":
        level = int(p[1])
        if p[2] == "upsamplers":
            slot = 2 if "CrossAttn" in config.up_block_types[level] else 1
            return f"output_blocks.{level * per_level + per_level - 1}.{slot}.conv.{leaf}"
        block = level * per_level + int(p[3])
        if p[2] == "resnets":
            return f"output_blocks.{block}.0.{_ldm_resnet(p[4:])}"
        return f"output_blocks.{block}.1.{'.'.join(p[4:])}"
    raise KeyError(key)


def ldm_vae_key(key: str, config) -> str:
    """LDM's VAE numbers decoder levels from the bottom (up.3 is diffusers' up_blocks.0) and keeps
    mid-block attention as 1x1 convolutions named q/k/v/proj_out."""
    levels = len(config.block_out_channels)
    p = key.replace("conv_norm_out", "norm_out").split(".")
    side, leaf = p[0], p[-1]
    if p[1] in ("down_blocks", "up_blocks"):
        level = int(p[2]) if p[1] == "down_blocks" else levels - 1 - int(p[2])
        word = "down" if p[1] == "down_blocks" else "up"
        if p[3] == "resnets":
            rest = ".".join(p[5:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.{word}.{level}.block.{p[4]}.{rest}"
        return f"{side}.{word}.{level}.{word}sample.conv.{leaf}"
    if p[1] == "mid_block":
        if p[2] == "resnets":
            return f"{side}.mid.block_{int(p[3]) + 1}.{'.'.join(p[4:])}"
        names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
        return f"{side}.mid.attn_1.{names[p[4]]}.{leaf}"
    return ".".join(p)


def to_ldm(unet, vae, text_encoder, sd2=False) -> dict:
    """The tiny model as a single-file state dict in the original CompVis/LDM layout, with the extra
    entries real checkpoints carry (noise schedule, EMA bookkeeping, position_ids / unused OpenCLIP parts)."""
    out = {}
    for k, v in unet.state_dict().items():
        out["model.diffusion_model." + ldm_unet_key(k, unet.config)] = v.clone()
    for k, v in vae.state_dict().items():
        ldm = ldm_vae_key(k, vae.config)
        if ".mid.attn_1." in ldm and ldm.endswith(".weight") and ".norm." not in ldm:
            v = v[:, :, None, None]  # a 1x1 convolution in LDM
        out["first_stage_model." + ldm] = v.clone()
    te = text_encoder.state_dict()
    config = text_encoder.config
    if not sd2:
        for k, v in te.items():
            out["cond_stage_model.transformer.text_model." + k] = v.clone()
        out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    else:  # OpenCLIP: fused q/k/v, its own names, and a last block SD 2 does not use (penultimate layer)
        p = "cond_stage_model.model."
        out[p + "token_embedding.weight"] = te["embeddings.token_embedding.weight"].clone()
        out[p + "positional_embedding"] = te["embeddings.position_embedding.weight"].clone()
        out[p + "ln_final.weight"] = te["final_layer_norm.weight"].clone()
        out[p + "ln_final.bias"] = te["final_layer_norm.bias"].clone()
        names = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                 "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
        for i in range(config.num_hidden_layers):
            ours, theirs = f"encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
            for kind in ("weight", "bias"):
                qkv = [te[f"{ours}self_attn.{x}_proj.{kind}"] for x in "qkv"]
                out[theirs + f"attn.in_proj_{kind}"] = torch.cat(qkv)
                for a, b in names.items():
                    out[theirs + f"{b}.{kind}"] = te[f"{ours}{a}.{kind}"].clone()
        g = torch.Generator().manual_seed(2)
        first, last = f"{p}transformer.resblocks.0.", f"{p}transformer.resblocks.{config.num_hidden_layers}."
        for k in [k for k in out if k.startswith(first)]:  # the last block, unused: SD 2 takes the penultimate
            out[last + k[len(first):]] = torch.randn(out[k].shape, generator=g)
        out[p + "text_projection"] = torch.randn(config.hidden_size, config.projection_dim, generator=g)
        out[p + "logit_scale"] = torch.tensor(4.6052)
    out["betas"] = torch.linspace(0.00085, 0.012, 1000)
    out["alphas_cumprod"] = torch.cumprod(1 - out["betas"], 0)
    out["model_ema.decay"] = torch.tensor(0.9999)
    out["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    return out


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may reach the network: every load is local, or offline from the cache."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (two threads mostly spin-wait, worse on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sd1():
    return tiny_sd(sd2=False)


@pytest.fixture(scope="module")
def sd1_outputs(sd1):
    return run_tiny(*sd1)


@pytest.fixture(scope="module")
def sd1_folder(tmp_path_factory, sd1):
    """The tiny SD 1.x-style model saved as a diffusers folder (copy it before changing it)."""
    return write_diffusers_folder(tmp_path_factory.mktemp("sd1-folder") / "pipe", *sd1)


@pytest.fixture(scope="module")
def sd1_file(tmp_path_factory, sd1):
    """(tiny SD 1.x-style LDM .safetensors, its config folder, its LDM state dict)."""
    root = tmp_path_factory.mktemp("sd1-file")
    state = to_ldm(*sd1)
    path = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path, write_config_folder(root / "config", *sd1), state


# ------------------------------------------------------------------------------------------ shipped configs


def test_shipped_sd15_config_is_the_shared_one():
    shared = need_shared(SD15)
    ours = CONFIGS_DIR / "sd15"
    for name in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                 "scheduler/scheduler_config.json", "tokenizer/tokenizer_config.json"):
        assert json.loads((ours / name).read_text()) == json.loads((shared / name).read_text()), name
    for name in ("tokenizer/vocab.json", "tokenizer/merges.txt"):
        assert (ours / name).read_bytes() == (shared / name).read_bytes(), name
    assert not [p for p in CONFIGS_DIR.rglob("*") if p.suffix in (".safetensors", ".bin", ".ckpt", ".pt")]


@pytest.mark.parametrize(
    "version, unet_params, text_params",
    [("sd15", 859_520_964, 123_060_480), ("sd21", 865_910_724, 340_387_840)],
)
def test_shipped_configs_build_the_real_architectures(version, unet_params, text_params):
    folder = CONFIGS_DIR / version
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    assert sum(p.numel() for p in unet.parameters()) == unet_params
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert sum(p.numel() for p in text.parameters()) == text_params
    width = 768 if version == "sd15" else 1024
    assert unet.config.cross_attention_dim == width == text.config.hidden_size
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler.get("prediction_type", "epsilon") == ("epsilon" if version == "sd15" else "v_prediction")


def test_shipped_tokenizers():
    sd15, sd21 = shipped_tokenizer("sd15"), shipped_tokenizer("sd21")
    assert sd15("a man is skiing").input_ids == SKIING == sd21("a man is skiing").input_ids
    assert (sd15.pad_token, sd15.pad_token_id) == ("<|endoftext|>", 49407)
    assert (sd21.pad_token, sd21.pad_token_id) == ("!", 0)
    assert len(sd15) == len(sd21) == 49408


# ---------------------------------------------------------------------------------------- diffusers folders


def test_diffusers_folder_round_trip(sd1_folder, sd1_outputs):
    folder = sd1_folder
    base = load_base(folder)
    assert isinstance(base, BaseModel)
    assert base.source == str(folder) and base.reference_unet_dir is None
    assert base.tokenizer("a man is skiing").input_ids == SKIING
    assert base.scheduler_config == json.loads((CONFIGS_DIR / "sd15/scheduler/scheduler_config.json").read_text())
    assert not base.unet.training and not base.vae.training and not base.text_encoder.training
    assert_same_outputs(base, sd1_outputs)

    again = load_base(str(folder), prediction_type="v_prediction", dtype=torch.float16)
    assert again.scheduler_config["prediction_type"] == "v_prediction"
    assert {p.dtype for m in (again.unet, again.vae, again.text_encoder) for p in m.parameters()} == {torch.float16}


def test_diffusers_folder_with_a_missing_weight_is_refused(tmp_path, sd1_folder):
    folder = Path(shutil.copytree(sd1_folder, tmp_path / "pipe"))
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["down_blocks.0.attentions.0.proj_in.weight"]
    state["surplus.weight"] = torch.zeros(3)
    save_file(state, weights)
    with pytest.raises(ModelLoadError) as info:
        load_base(folder)
    message = str(info.value)
    assert "down_blocks.0.attentions.0.proj_in.weight" in message and "surplus.weight" in message
    assert "\n" not in message


def test_reference_pipeline_folder(tmp_path, sd1_folder, sd1_outputs):
    """A pipeline saved by the Tune-A-Video reference code: everything but its 3D unet is loaded."""
    folder = Path(shutil.copytree(sd1_folder, tmp_path / "tav"))
    index = json.loads((folder / "model_index.json").read_text())
    index.update(_class_name="TuneAVideoPipeline", unet=["tuneavideo.models.unet", "UNet3DConditionModel"])
    (folder / "model_index.json").write_text(json.dumps(index))
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    unet_config["_class_name"] = "UNet3DConditionModel"
    (folder / "unet" / "config.json").write_text(json.dumps(unet_config))
    base = load_base(folder)
    assert base.unet is None
    assert base.reference_unet_dir == folder / "unet"
    with torch.no_grad():
        assert torch.equal(base.text_encoder(torch.tensor([SKIING])).last_hidden_state, sd1_outputs[3])


# ------------------------------------------------------------------------------------------- single files


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_round_trip_sd1(tmp_path, sd1_outputs, sd1_file, suffix):
    _, config, state = sd1_file
    path = tmp_path / f"dreambooth{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:  # a Lightning checkpoint: the weights under "state_dict"
        torch.save({"state_dict": state, "global_step": 1234, "epoch": 3}, path)
    base = load_base(path, config=config)
    assert base.unet is not None and base.reference_unet_dir is None and base.source == str(path)
    assert base.tokenizer("a man is skiing").input_ids == SKIING
    assert base.scheduler_config["_class_name"] == "PNDMScheduler"
    assert_same_outputs(base, sd1_outputs)


def test_single_file_round_trip_sd2_openclip(tmp_path):
    """SD 2.x layout: linear transformer projections and an OpenCLIP text encoder (fused q/k/v)."""
    models = tiny_sd(sd2=True)
    path = tmp_path / "sd2.safetensors"
    save_file({k: v.contiguous() for k, v in to_ldm(*models, sd2=True).items()}, path)
    config = write_config_folder(tmp_path / "config", *models, sd2=True)
    base = load_base(path, config=config)
    assert base.tokenizer.pad_token == "!"
    assert base.scheduler_config["prediction_type"] == "v_prediction"
    assert_same_outputs(base, run_tiny(*models))
    assert load_base(path, config=config, prediction_type="epsilon").scheduler_config["prediction_type"] == "epsilon"


def test_single_file_in_half_precision(sd1, sd1_file):
    path, config, _ = sd1_file
    base = load_base(path, config=config, dtype=torch.float16)
    for ours, theirs in ((base.unet, sd1[0]), (base.vae, sd1[1]), (base.text_encoder, sd1[2])):
        params = dict(ours.named_parameters())
        assert {p.dtype for p in params.values()} == {torch.float16}
        assert all(torch.equal(params[k], v.half()) for k, v in theirs.named_parameters())


@pytest.mark.parametrize(
    "change, named",
    [
        ("del", "model.diffusion_model.input_blocks.1.1.proj_in.weight"),
        ("del", "model.diffusion_model.input_blocks.2.0.op.bias"),
        ("del", "model.diffusion_model.output_blocks.1.1.conv.bias"),
        ("del", "first_stage_model.encoder.mid.attn_1.q.weight"),
        ("del", "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"),
        ("add", "model.diffusion_model.input_blocks.1.1.extra.weight"),
        ("add", "model.diffusion_model.surplus"),
        ("add", "first_stage_model.decoder.surplus.weight"),
        ("add", "control_model.zero_convs.0.0.weight"),
        ("shape", "model.diffusion_model.out.2.weight"),
    ],
)
def test_single_file_is_strict(tmp_path, sd1_file, change, named):
    _, config, state = sd1_file
    state = dict(state)
    if change == "del":
        del state[named]
    elif change == "add":
        state[named] = torch.zeros(3)
    else:
        state[named] = torch.zeros(2, 2)
    path = tmp_path / "edited.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    with pytest.raises(ModelLoadError) as info:
        load_base(path, config=config)
    message = str(info.value)
    assert named in message and "\n" not in message


def test_single_file_without_config_needs_a_known_version(sd1_file):
    path, _, _ = sd1_file
    with pytest.raises(ModelLoadError, match="cross-attention has width 32.*config="):
        load_base(path)


def test_config_folder_is_checked(tmp_path, sd1_file):
    path, config, _ = sd1_file
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_base(path, config=tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(config, partial)
    shutil.rmtree(partial / "vae")
    with pytest.raises(ModelLoadError, match="vae/config.json"):
        load_base(path, config=partial)


# ------------------------------------------------------------------------------------- version detection


def fake_ldm_keys(version):
    """Real SD key names with tiny tensors of the real rank and the widths that matter."""
    width = 768 if version == "sd15" else 1024
    u = "model.diffusion_model."
    keys = {
        u + "input_blocks.0.0.weight": torch.empty(320, 4, 1, 1),
        # SD 1 projects with 1x1 convolutions, SD 2 with linear layers
        u + "input_blocks.1.1.proj_in.weight": torch.empty(320, 320, *([1, 1] if version == "sd15" else [])),
        u + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.empty(320, width),
        u + "middle_block.1.transformer_blocks.0.attn2.to_k.weight": torch.empty(1280, width),
        u + "output_blocks.11.1.transformer_blocks.0.attn2.to_v.weight": torch.empty(320, width),
        "first_stage_model.encoder.conv_in.weight": torch.empty(128, 3, 3, 3),
        "alphas_cumprod": torch.empty(1000),
    }
    if version == "sd15":
        keys["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = torch.empty(1, 768)
        keys["cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight"] = torch.empty(768, 1)
    else:
        keys["cond_stage_model.model.token_embedding.weight"] = torch.empty(1, 1024)
        keys["cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight"] = torch.empty(3072, 1)
    return keys


def test_detect_sd_version():
    assert detect_sd_version(fake_ldm_keys("sd15")) == "sd15"
    assert detect_sd_version(fake_ldm_keys("sd21")) == "sd21"
    unet_only = {k: v for k, v in fake_ldm_keys("sd21").items() if k.startswith("model.")}
    assert detect_sd_version(unet_only) == "sd21"


def test_detect_sd_version_refuses_other_models():
    mixed = fake_ldm_keys("sd15") | {"cond_stage_model.model.token_embedding.weight": torch.empty(1, 1024)}
    inconsistent = {k: v for k, v in fake_ldm_keys("sd21").items() if not k.startswith("cond_stage_model")}
    inconsistent["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = torch.empty(1, 768)
    inpainting = fake_ldm_keys("sd15") | {"model.diffusion_model.input_blocks.0.0.weight": torch.empty(320, 9, 1, 1)}
    sdxl = fake_ldm_keys("sd21") | {"conditioner.embedders.1.model.positional_embedding": torch.empty(77, 1280)}
    diffusers_layout = {"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.empty(320, 768)}
    odd_width = {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.empty(8, 512)}
    for state, pattern in [
        (mixed, "two text encoders"),
        (inconsistent, "inconsistent"),
        (inpainting, "9 input channels"),
        (sdxl, "XL"),
        (diffusers_layout, "no model.diffusion_model"),
        (odd_width, "width 512"),
    ]:
        with pytest.raises(ModelLoadError, match=pattern):
            detect_sd_version(state)


# ------------------------------------------------------------------------------------ missing paths, hub


@pytest.mark.parametrize("name", ["missing.safetensors", "no/such/folder", "./nope"])
def test_missing_local_path(tmp_path, name):
    source = name if name.startswith("./") else str(tmp_path / name)
    with pytest.raises(ModelLoadError, match="no such file or folder") as info:
        load_base(source)
    assert source in str(info.value)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ModelLoadError, match="model_index.json"):
        load_base(tmp_path)


def test_other_files_and_options_are_refused(tmp_path, sd1_folder, sd1_file):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(ModelLoadError, match="neither a diffusers folder nor a checkpoint file"):
        load_base(notes)
    with pytest.raises(ModelLoadError, match="config= only applies to a single"):
        load_base(sd1_folder, config=sd1_file[1])
    with pytest.raises(ModelLoadError, match="prediction_type"):
        load_base(sd1_file[0], config=sd1_file[1], prediction_type="x0")
    pickled = tmp_path / "lightning.ckpt"  # objects beside the tensors: torch.load(weights_only=True) refuses
    torch.save({"state_dict": {"betas": torch.zeros(2)}, "callbacks": {"checkpoint": Path("x")}}, pickled)
    with pytest.raises(ModelLoadError, match="could not read .*weights_only=True") as info:
        load_base(pickled)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_hub_id_offline_not_cached(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError) as info:
        load_base("tuneavideo-tests/no-such-model")
    message = str(info.value)
    assert message.startswith(
        "could not load 'tuneavideo-tests/no-such-model' from the hub (no network or no such model"
    )
    assert message.endswith("pass a local diffusers folder or a .safetensors file") and "\n" not in message


@pytest.mark.parametrize("offline", [True, False])
def test_hub_id_from_the_cache(monkeypatch, tmp_path, sd1_folder, sd1_outputs, offline):
    """A hub model already in the Hugging Face cache loads from it without the network (no_network guards),
    with HF_HUB_OFFLINE=1 and without it."""
    import huggingface_hub.constants

    cache = tmp_path / "hub-cache"
    repo = cache / "models--tuneavideo-tests--tiny-sd"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(sd1_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    base = load_base("tuneavideo-tests/tiny-sd")
    assert base.source == "tuneavideo-tests/tiny-sd" and base.reference_unet_dir is None
    assert_same_outputs(base, sd1_outputs)
