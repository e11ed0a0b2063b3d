"""tuneavideo eval: CLIP metrics on a tiny random CLIP built from a transformers config, against a direct
computation written here; the tables, the page, the toy-world columns and the errors."""

import csv

import pytest
import torch
from test_batch import write_manifest
from tiny import tiny_tokenizer
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from tuneavideo.batch import load_manifest, run_job
from tuneavideo.cli import main
from tuneavideo.evaluation import COLUMNS, TOY_COLUMNS
from tuneavideo.runfolder import EDITS
from tuneavideo.video import read_video

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4),
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory):
    """Two toy-world jobs run in this process (tune 2 steps, one edit each, 2 sampling steps)."""
    folder = tmp_path_factory.mktemp("eval")
    jobs = load_manifest(write_manifest(folder))[:2]
    for job in jobs:
        assert run_job(job, folder / "batch" / job.name, device="cpu").status == "done"
    return folder / "batch"


def direct_metrics(model: CLIPModel, tokenizer, video: torch.Tensor, prompt: str) -> tuple[float, float]:
    """The two metrics written out: CLIP's preprocessing of 32x32 frames (rescale, normalise), the projections, and
    the cosines in loops."""
    pixels = ((video * 255).round() / 255 - CLIP_MEAN) / CLIP_STD  # (f, 3, 32, 32)
    with torch.no_grad():
        images = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        text = model.text_projection(model.text_model(input_ids=ids).pooler_output)[0]
    cos = torch.nn.functional.cosine_similarity
    consistency = sum(cos(images[i], images[i + 1], dim=0) for i in range(len(images) - 1)) / (len(images) - 1)
    alignment = sum(cos(image, text, dim=0) for image in images) / len(images)
    return 100 * consistency.item(), 100 * alignment.item()


def test_eval_matches_a_direct_computation_and_writes_the_table_and_page(batch_dir, tiny_clip, capsys):
    assert main(["eval", str(batch_dir), "--clip", str(tiny_clip), "--device", "cpu"]) == 0
    with open(batch_dir / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 3 and rows[-1]["run"] == "mean"
    model, tokenizer = CLIPModel.from_pretrained(tiny_clip).eval(), tiny_tokenizer()
    for row in rows[:2]:
        video = read_video(next((batch_dir / row["run"] / EDITS).glob("*-moving-*.mp4")), num_frames=4, width=32, height=32)
        consistency, alignment = direct_metrics(model, tokenizer, video, row["prompt"])
        assert float(row["frame_consistency"]) == pytest.approx(consistency, abs=1e-3)
        assert float(row["textual_alignment"]) == pytest.approx(alignment, abs=1e-3)
        assert float(row["tune_seconds"]) > 0 and float(row["edit_seconds"]) > 0 and float(row["edit_peak_memory_mib"]) > 0
        assert all(row[c] != "" for c in TOY_COLUMNS)  # toy-world runs: the detector's metrics too
    mean = sum(float(r["textual_alignment"]) for r in rows[:2]) / 2
    assert float(rows[-1]["textual_alignment"]) == pytest.approx(mean, abs=1e-3)
    page = (batch_dir / "eval.html").read_text()
    assert page.count("<video") == 4 and "clip0/source.mp4" in page  # each run: source and edit side by side
    assert "| frame_consistency |" in (batch_dir / "eval.md").read_text()
    assert "2 edits: frame consistency" in capsys.readouterr().out


@pytest.mark.parametrize("clip, message", [(None, "eval needs a CLIP model; pass --clip"),
                                           ("no-such-clip-folder/", "pass --clip")])
def test_eval_without_clip_weights_is_one_error_line(batch_dir, tmp_path, capsys, clip, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["eval", str(batch_dir), "--output", str(tmp_path / "out")] + (["--clip", str(tmp_path / clip)] if clip else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_parse_caption_inverts_every_caption_template():
    from test_batch import CLIPS

    from tuneavideo.toyworld import CAPTION_TEMPLATES, CLIP_CAPTION_TEMPLATES, Clip, Scene, caption, clip_caption, parse_caption

    orange = Clip(shape="triangle", colour="orange", size="small", background="grey road", path="circling")  # "an orange"
    for clip in CLIPS + (orange,):
        for index in range(len(CLIP_CAPTION_TEMPLATES)):
            found = parse_caption(clip_caption(clip, index))
            assert {k: found[k] for k in ("shape", "colour", "background", "path")} == {
                "shape": clip.shape, "colour": clip.colour, "background": clip.background, "path": clip.path}
        scene = Scene(shape=clip.shape, colour=clip.colour, size=clip.size, background=clip.background, x=0.5, y=0.5)
        for index in range(len(CAPTION_TEMPLATES)):
            assert parse_caption(caption(scene, index))["shape"] == clip.shape
    assert parse_caption("a man is skiing") is None
