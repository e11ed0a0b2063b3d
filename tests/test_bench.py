"""``benchmarks/gpu_bench.py`` at its tiny size on the CPU: it runs end to end through the project's
tuning and editing code, and its JSON holds every figure the GPU run reports."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED, VIDEOS, need_shared

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_bench.py"
VARIANTS = ("low-memory", "no-checkpointing", "channels-last", "cudnn-benchmark", "fp32")


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    need_shared(VIDEOS / "man-skiing.mp4")
    folder = tmp_path_factory.mktemp("bench")
    out = folder / "bench.json"
    command = [sys.executable, str(BENCH), "--tiny", "--device", "cpu", "--shared", str(SHARED), "--out", str(out), "--work", str(folder / "work")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout, folder / "work"


def test_every_figure_is_there(bench):
    data, _, _ = bench
    assert "errors" not in data, data.get("errors")
    meta = data["meta"]
    assert meta["tiny"] and meta["frames"] == 4 and meta["size"] == 64 and meta["video"] == "man-skiing.mp4"
    for key in ("card", "torch", "diffusers", "date", "command", "base_build_s"):
        assert meta[key], key

    flops = data["flops"]
    assert flops["tuning_step"] == flops["forward"] + flops["backward"] > 0
    assert flops["inversion_step"] == flops["forward"] and flops["sampling_step"] == 2 * flops["forward"]
    # recomputation adds forward work, more of it the more is checkpointed
    assert flops["tuning_step"] < flops["tuning_step_executed_default"] < flops["tuning_step_executed_low-memory"]
    assert number(data["matmul"]["tflops"]) and data["matmul"]["tflops"] > 0

    for name in ("default",) + VARIANTS:
        run = data["tuning"][name]
        for key in ("median_step_s", "mean_step_s", "min_step_s", "first_step_s", "projected_500_steps_s", "tune_wall_s"):
            assert number(run[key]) and run[key] > 0, (name, key)
        assert run["projected_500_steps_s"] == pytest.approx(500 * run["median_step_s"], rel=1e-3)
        assert run["losses_finite"] and len(run["step_seconds"]) == run["warmup"] + run["measured"]
        assert run["peak_steps_gib"] is None  # no memory counter on the CPU
    assert data["tuning"]["low-memory"]["settings"]["profile"] == "low-memory"
    assert data["tuning"]["no-checkpointing"]["settings"]["gradient_checkpointing"] is False
    # The same seed and data in every variant: the first loss agrees (fp32 on the CPU; channels-last
    # and cuDNN settings only change float rounding).
    first = data["tuning"]["default"]["losses"][0]
    assert all(abs(data["tuning"][name]["losses"][0] - first) < 1e-3 for name in VARIANTS)

    for phase, steps in (("inversion", 3), ("sampling", 3)):
        assert data[phase]["steps"] == steps
        assert number(data[phase]["total_s"]) and number(data[phase]["median_step_s"])
    for key in ("encode_chunk8_s", "encode_chunk2_s", "decode_chunk8_s", "decode_chunk2_s"):
        assert number(data["vae"][key]), key
    job = data["job"]
    for key in ("edit_wall_s", "tune_overhead_s", "measured_s", "projected_s", "inversion_plus_edit_s"):
        assert number(job[key]), key
    assert job["projected_s"] > job["measured_s"]  # 500 steps, not 3

    long = data["long_video"]  # 10 frames edited with the 4-frame run: windows of 4 sharing 1, then all at once
    assert long["frames"] == 10 and long["windows"]["windows"] == [4, 1] and long["whole"]["windows"] is None
    for name in ("windows", "whole"):
        for phase in ("inversion", "sampling"):
            assert long[name][phase]["steps"] == 3 and number(long[name][phase]["median_step_s"]), (name, phase)

    controlled = data["controlled_edits"]  # each edit at --control-steps (4 under --tiny) inversion and sampling steps
    assert controlled["steps"] == 4 and controlled["fatezero_blend"] == ["man"]
    variants = controlled["variants"]
    assert list(variants) == ["plain", "negative-prompt", "null-text", "p2p", "fatezero"]
    for name, run in variants.items():
        assert (run["inversion"], run["control"]) == {"plain": ("ddim", "none"), "negative-prompt": ("negative-prompt", "none"),
                                                      "null-text": ("null-text", "none"), "p2p": ("null-text", "p2p"),
                                                      "fatezero": ("null-text", "fatezero")}[name]
        assert number(run["sampling_s"]) and run["sampling_s"] > 0 and run["finite"], name
        assert number(run["inversion_s"]) and run["inversion_s"] >= 0, name
        assert run["inversion_peak_gib"] is None and run["sampling_peak_gib"] is None  # no memory counter on the CPU
        # p2p and fatezero find null-text's inversion in memory; the others make their own
        assert run["inversion_cached"] is (name in ("p2p", "fatezero")), name
        if not run["inversion_cached"]:
            assert run["inversion_s"] > 0, name
    fatezero = variants["fatezero"]
    assert number(fatezero["recording_s"]) and fatezero["recording_s"] > 0
    parts = fatezero["record_bytes_parts"]
    assert fatezero["record_bytes"] == parts["self"] + parts["cross"] + parts["masks"] > 0
    assert all(parts[kind] > 0 for kind in ("self", "cross", "masks"))
    assert fatezero["record_bytes"] == fatezero["record_bytes_predicted"]  # control.fatezero_record_bytes, per frame x 4

    summary = data["summary"]
    for key in ("floor_s_at_790_tflops", "step_over_floor_790", "floor_s_at_measured_matmul", "step_over_floor_measured", "achieved_tflops"):
        assert number(summary[key]) and summary[key] > 0, key
    assert summary["paper_setting_on_gpu"] is False and "targets" not in summary  # targets are for the GPU at 24x512x512

    fidelity = data["fidelity"]
    assert fidelity["pass"], fidelity
    assert fidelity["output_cosine"] >= 0.999 and fidelity["grad_cosine"] >= 0.99
    assert fidelity["same_trained_set"] and fidelity["every_trained_tensor_has_grad"] and fidelity["trained_fp32_frozen_low_precision"]


def test_prints_a_table_last_and_writes_the_edit(bench):
    data, stdout, work = bench
    lines = stdout.strip().splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("tuning step [default]"))) - 1:]
    assert any(line.startswith("whole job") for line in table) and any(line.startswith("FLOPs of one tuning step") for line in table)
    assert any(line.startswith("long video: 10 frames, windows of 4 sharing 1") for line in table)
    controlled = [line for line in table if line.startswith("controlled edit [")]
    assert [line.split("]")[0] for line in controlled] == ["controlled edit [" + name for name in data["controlled_edits"]["variants"]]
    assert all(", 4 steps" in line for line in controlled)
    assert any(line.startswith("fatezero record, 4 frames") for line in table)
    assert "wrote" in lines[-1] and (work.parent / "bench.txt").is_file()
    edits = list(work.glob("bench-*/default/edits/*.mp4"))
    assert len(edits) == 2  # the edit and the side-by-side
