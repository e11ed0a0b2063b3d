"""tuneavideo: tune Stable Diffusion on one video, then edit it with new prompts."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from . import __version__
from .config import (CONTROL_MODES, FRAME_ATTENTION, FRAME_NORMS, INVERSION_METHODS, MIXED_PRECISION, PROFILES, RESIZE_MODES,
                     ConfigError, RunConfig)
from .errors import TuneAVideoError


def _add_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", dest="num_inference_steps", type=int, help="DDIM sampling steps (default 50)")
    parser.add_argument("--guidance", dest="guidance_scale", type=float, help="classifier-free guidance scale (default 12.5)")
    parser.add_argument("--negative-prompt", help="unconditional prompt for guidance (default: empty)")
    parser.add_argument("--eta", type=float, help="DDIM eta: 0 is deterministic (default 0)")
    parser.add_argument("--seed", type=int, help="seed of the sampling noise (default 33)")
    parser.add_argument("--inversion-steps", dest="num_inversion_steps", type=int, help="DDIM inversion steps (default 50)")
    parser.add_argument("--no-inversion", dest="use_inversion", action="store_false", default=None,
                        help="start from random noise instead of the inverted source video")


def _port(text: str) -> int:
    """A TCP port number for argparse: 1-65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port; give a number from 1 to 65535, e.g. 7860")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneavideo", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tuneavideo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    tune = sub.add_parser("tune", help="tune a Stable Diffusion model on one video; writes a run folder")
    tune.add_argument("--config", help="a YAML config: ours, or the reference implementation's (configs/man-skiing.yaml)")
    tune.add_argument("--base-model", help="hub id, diffusers folder, or single .safetensors/.ckpt file")
    tune.add_argument("--video", dest="path", help="mp4, mov, webm, gif, or a folder of images")
    tune.add_argument("--prompt", help="what the video shows, e.g. 'a man is skiing'")
    tune.add_argument("--output", "-o", help="the run folder to write (default: the reference config's output_dir)")
    tune.add_argument("--num-frames", type=int, help="frames to sample (default 24)")
    tune.add_argument("--width", type=int, help="width, a multiple of 8 (default 512)")
    tune.add_argument("--height", type=int, help="height, a multiple of 8 (default 512)")
    tune.add_argument("--start", type=int, help="first frame (default 0)")
    tune.add_argument("--stride", type=int, help="take every N-th frame (default 1)")
    tune.add_argument("--resize", choices=RESIZE_MODES, help="crop to the aspect (default), squash, or pad")
    tune.add_argument("--train-steps", dest="tune_steps", type=int, help="tuning steps (default 500)")
    tune.add_argument("--learning-rate", type=float, help="AdamW learning rate (default 3e-5)")
    tune.add_argument("--train-seed", dest="tune_seed", type=int, help="seed of the tuning noise (default 33)")
    tune.add_argument("--mixed-precision", choices=MIXED_PRECISION, help="auto: bf16 on GPUs that have it, fp32 on the CPU")
    tune.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                      help="recompute activations in the backward pass to save memory (default on; off: fastest, most memory)")
    tune.add_argument("--profile", choices=PROFILES,
                      help="default: recompute the highest-resolution level only (24 frames at 512x512 in 24 GiB); "
                           "low-memory: recompute every block, VAE-encode 2 frames at a time (12 GiB)")
    tune.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                      help="run the UNet's convolutions in channels-last memory format (default off)")
    tune.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                      help="torch.compile the UNet: faster steps after minutes of compilation (default off)")
    tune.add_argument("--trainable", dest="trainable_modules", nargs="+", help="module name suffixes to train (default attn1.to_q attn2.to_q attn_temp)")
    tune.add_argument("--frame-attention", choices=FRAME_ATTENTION,
                      help="self-attention across frames (default sparse-causal; per-frame is the paper's ablation)")
    tune.add_argument("--frame-norms", choices=FRAME_NORMS,
                      help="ResNet GroupNorm statistics over all frames (default pooled, the method) or per frame (an ablation)")
    tune.add_argument("--checkpoint-every", type=int, help="save a resumable checkpoint every N steps (default 100; 0: never)")
    tune.add_argument("--validation-every", type=int, help="sample the validation prompts every N steps (0: never)")
    tune.add_argument("--validation-prompt", dest="prompts", action="append", help="a validation prompt (repeatable)")
    tune.add_argument("--resume", action="store_true",
                      help="continue an interrupted run from its latest checkpoint; --train-steps, --learning-rate and "
                           "sampling flags may change, the clip, prompt and base may not")
    tune.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    _add_sampling(tune)

    edit = sub.add_parser("edit", help="generate edited videos from a run folder")
    edit.add_argument("run_dir", help="a run folder from 'tuneavideo tune', or a pipeline folder saved by the reference")
    edit.add_argument("--prompt", dest="prompts", action="append", default=[], help="an edit prompt (repeatable)")
    edit.add_argument("--output", "-o", help="where to write the videos (default RUN_DIR/edits)")
    edit.add_argument("--base-model", help="apply the tuned tensors to another base of the same SD version (e.g. DreamBooth)")
    edit.add_argument("--video", help="source video: a reference folder's; for a run folder, in place of the video it was "
                                      "tuned on (then nothing is cached)")
    edit.add_argument("--inv-latents", help="inverted latents: the reference's inv_latents/ddim_latent-*.pt")
    edit.add_argument("--num-frames", type=int,
                      help="frames to edit, range(start, len, stride)[:N] of the source video: for a run folder, read from "
                           "the video it was tuned on, any number (default: the tuned clip's)")
    edit.add_argument("--all-frames", action="store_true",
                      help="edit every frame of the source video from --start at --stride, in place of --num-frames")
    edit.add_argument("--width", type=int, help="width (reference folders without --inv-latents)")
    edit.add_argument("--height", type=int, help="height (reference folders without --inv-latents)")
    edit.add_argument("--start", type=int, help="first frame of the source video (default: the tuned clip's; reference folders 0)")
    edit.add_argument("--stride", type=int, help="take every N-th frame of the source video (default: the tuned clip's; "
                                                 "reference folders 1)")
    edit.add_argument("--resize", choices=RESIZE_MODES, help="fit --video to the size (reference folders; default squash, as the reference)")
    edit.add_argument("--config", help="the reference config a reference folder was tuned with: its frames, size, sampling settings "
                                       "and prompts (flags override it)")
    edit.add_argument("--fps", type=float, default=8, help="frame rate of the written videos (default 8)")
    edit.add_argument("--mixed-precision", choices=MIXED_PRECISION, default="auto", help="weights' dtype (auto: fp16/bf16 on GPU)")
    edit.add_argument("--device", help="cuda, cpu (default: cuda when available)")
    _add_sampling(edit)
    edit.add_argument("--inversion", choices=INVERSION_METHODS,
                      help="ddim: the method's, with the empty prompt (default); negative-prompt: with the source prompt, which "
                           "also serves as the unconditional prompt (Miyake et al.); null-text: with the source prompt and "
                           "an unconditional embedding optimised per step (Mokady et al.), cached in the run folder")
    edit.add_argument("--control", choices=CONTROL_MODES,
                      help="attention control: none (default), p2p (Prompt-to-Prompt with the source in the batch, as "
                           "Video-P2P), fatezero (fusion with the maps recorded while inverting; needs --blend)")
    edit.add_argument("--cross-replace", type=float,
                      help="fraction of the first steps whose cross-attention maps come from the source (default 0.8)")
    edit.add_argument("--self-replace", type=float,
                      help="fraction of the first steps whose self-attention maps come from the source (default 0.4)")
    edit.add_argument("--reweight", nargs="+", metavar="WORD=FACTOR",
                      help="scale the attention to a word of the edit prompt, e.g. red=2 (with --control)")
    edit.add_argument("--blend", nargs="+", metavar="WORD",
                      help="words whose cross-attention marks the region to edit; outside it the source is kept (with --control)")
    edit.add_argument("--blend-threshold", type=float, help="threshold of the blend mask normalised to 1 (default 0.3)")
    edit.add_argument("--window", type=int,
                      help="frames per window of temporal attention and the pooled norms, for more frames than tuned "
                           "(default: the tuned clip's length; one window as long as the video runs it whole)")
    edit.add_argument("--overlap", type=int,
                      help="frames neighbouring windows share, blended with linear ramps at every step (default: a quarter "
                           "of the window)")
    edit.add_argument("--coupled-guidance", action="store_true", default=None,
                      help="the edit's guidance uses the inversion's unconditional embedding too (default: the plain one, "
                           "Video-P2P's decoupled guidance)")

    demo = sub.add_parser("demo", help="tune the bundled toy model on a rendered clip and edit it (no network)")
    demo.add_argument("--output", "-o", help="the folder to write (default ./tuneavideo-demo)")
    demo.add_argument("--train-steps", type=int, help="tuning steps")
    demo.add_argument("--steps", type=int, help="sampling and inversion steps")
    demo.add_argument("--model", help="a toy-sd pipeline folder written by python -m tuneavideo.toymodel.pretrain "
                                      "(default: the bundled model)")

    batch = sub.add_parser("batch", help="tune and edit every video of a manifest, one run folder each, on every local GPU "
                                          "or a Ray cluster")
    batch.add_argument("manifest", help="a YAML file: defaults (RunConfig sections) and jobs (video, prompt, edits, "
                                        "optional name and settings); see README 'Many videos'")
    batch.add_argument("--output", "-o", required=True, help="the batch folder: one run folder per job, OUTPUT/NAME")
    batch.add_argument("--ray", metavar="ADDRESS", help="run on the Ray cluster at ADDRESS (auto, ray://HOST:10001; local: "
                                                       "start one here); the run folders must be on storage every worker "
                                                       "shares (needs pip install 'tuneavideo[ray]')")
    batch.add_argument("--workers", type=int, help="local worker processes (default: one per CUDA GPU; one on the CPU)")
    batch.add_argument("--retries", type=int, default=2,
                       help="times a job whose worker died runs again, resuming from its checkpoint (default 2)")

    evaluate = sub.add_parser("eval", help="score the edits of run folders with CLIP (frame consistency, textual alignment) "
                                           "and write eval.csv, eval.md and eval.html")
    evaluate.add_argument("paths", nargs="+", metavar="DIR", help="a batch folder (its run folders are scored), or run folders")
    evaluate.add_argument("--clip", help="the CLIP model: hub id (e.g. openai/clip-vit-large-patch14; the local cache first) "
                                         "or a folder with a CLIPModel and its processor")
    evaluate.add_argument("--output", "-o", help="where to write the tables and page (default: the one DIR given)")
    evaluate.add_argument("--device", help="cuda, cpu (default: cuda when available)")

    ui = sub.add_parser("ui", help="serve a web page to tune and edit runs (needs the 'ui' extra: pip install 'tuneavideo[ui]')")
    ui.add_argument("--runs", default="runs", help="the folder of runs the page lists, tunes into and edits (default ./runs)")
    ui.add_argument("--base-model", dest="base_models", action="append", default=[],
                    help="a base model the page may offer besides the bundled toy model: hub id, diffusers folder or "
                         "single file (repeatable); the page cannot name any other")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=_port, default=7860, help="port to listen on (default 7860)")
    ui.add_argument("--max-upload", default="200mb", help="largest video the page accepts (default 200mb)")
    ui.add_argument("--device", help="cuda, cpu (default: cuda when available)")
    return parser


def _overrides(args: argparse.Namespace, fields: tuple[str, ...], rename: dict[str, str] | None = None) -> dict:
    rename = rename or {}
    values = {}
    for name in fields:
        value = getattr(args, name, None)
        if value is not None:
            values[rename.get(name, name)] = tuple(value) if name == "trainable_modules" else value
    return values


SAMPLE_FIELDS = ("num_inference_steps", "guidance_scale", "negative_prompt", "eta", "seed", "num_inversion_steps", "use_inversion")
CONTROL_FIELDS = ("inversion", "control", "cross_replace", "self_replace", "reweight", "blend", "blend_threshold", "coupled_guidance")
WINDOW_FIELDS = ("window", "overlap")


def _tune(args: argparse.Namespace) -> int:
    from .runfolder import CONFIG
    from .tuning import tune

    config = RunConfig.load(args.config) if args.config else RunConfig()
    output = args.output
    if output is None and args.config:
        import yaml

        output = (yaml.safe_load(Path(args.config).read_text()) or {}).get("output_dir")
    if not output:
        raise ConfigError("no run folder given; pass --output RUN_DIR")
    if args.resume and not args.config and (Path(output) / CONFIG).is_file():
        config = RunConfig.load(Path(output) / CONFIG)  # the run's settings; flags given change them (tune checks which may)
    config.video = replace(config.video, **_overrides(args, ("path", "prompt", "num_frames", "width", "height", "start", "stride", "resize")))
    config.tune = replace(config.tune, **_overrides(
        args, ("base_model", "tune_steps", "learning_rate", "tune_seed", "mixed_precision", "gradient_checkpointing",
               "profile", "channels_last", "compile", "trainable_modules", "frame_attention", "frame_norms", "checkpoint_every", "validation_every"),
        {"tune_steps": "steps", "tune_seed": "seed"}))
    config.sample = replace(config.sample, **_overrides(args, SAMPLE_FIELDS + ("prompts",)))
    config.validate()
    if not args.resume and not config.tune.base_model:  # a resumed run has its own (or tune says it has none)
        raise ConfigError("no base model given; pass --base-model (hub id, diffusers folder or .safetensors file)")
    if not args.resume and not config.video.path:
        raise ConfigError("no video given; pass --video PATH")
    result = tune(config.tune.base_model, config, output, resume=args.resume, device=args.device)
    print(f"tuned {len(result.trainable)} tensors in {len(result.losses)} steps; run folder: {result.run_dir}")
    return 0


def _edit(args: argparse.Namespace) -> int:
    from .editing import edit, load_run

    reference = RunConfig.load(args.config) if args.config else None
    if not args.prompts and not (reference.sample.prompts if reference else _run_prompts(args.run_dir)):
        raise ConfigError("no edit prompt given; pass --prompt 'your edit' (repeatable)")
    tuned = load_run(
        args.run_dir, base_model=args.base_model, device=args.device, mixed_precision=args.mixed_precision,
        video=args.video, inv_latents=args.inv_latents, num_frames=args.num_frames, width=args.width, height=args.height,
        start=args.start, stride=args.stride, resize=args.resize, config=reference, all_frames=args.all_frames,
    )
    sample = replace(tuned.config.sample, **_overrides(args, SAMPLE_FIELDS + CONTROL_FIELDS + WINDOW_FIELDS))
    result = edit(tuned, args.prompts or None, sample, args.output, fps=args.fps)
    print(f"wrote {len(result.files)} files to {result.files[0].parent}")
    return 0


def _run_prompts(run_dir: str) -> list[str]:
    """The prompts a run folder holds (a reference config's validation prompts), read before any model loads."""
    from .runfolder import CONFIG

    path = Path(run_dir) / CONFIG
    return RunConfig.load(path).sample.prompts if path.is_file() else []


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    for flag, value in (("--train-steps", args.train_steps), ("--steps", args.steps)):
        if value is not None and value < 1:  # before any work; run_demo checks the same for API callers
            raise ConfigError(f"{flag} {value}: give at least 1 step, or leave it out for the demo's default")
    folder = run_demo(args.output, train_steps=args.train_steps, steps=args.steps, model=args.model)
    print(f"demo written to {folder}")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from .batch import load_manifest, run_batch, summary

    jobs = load_manifest(args.manifest)  # the whole manifest checked before any work
    result = run_batch(jobs, args.output, ray_address=args.ray, workers=args.workers, retries=args.retries)
    for line in summary(result):
        print(line)
    return 1 if result.failed else 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluation import EVAL_CSV, EVAL_HTML, EVAL_MD, evaluate

    rows = evaluate(args.paths, args.clip, args.output, device=args.device)
    mean = rows[-1].values
    folder = Path(args.output or args.paths[0])
    print(f"{len(rows) - 1} edits: frame consistency {mean['frame_consistency']:.2f}, textual alignment "
          f"{mean['textual_alignment']:.2f} (100 x cosine); wrote {', '.join(str(folder / n) for n in (EVAL_CSV, EVAL_MD, EVAL_HTML))}")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from .tuning import resolve_device
    from .ui import serve

    resolve_device(args.device)  # an unknown device is said now, not at the first job
    serve(args.runs, args.base_models, host=args.host, port=args.port, device=args.device, max_upload=args.max_upload)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"tune": _tune, "edit": _edit, "demo": _demo, "batch": _batch, "eval": _eval, "ui": _ui}[args.command]
    try:
        return command(args)
    except TuneAVideoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system refused: no space, no permission, a file where a folder should be
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot write or read{where}: {error.strerror or error}; check the path, its permissions and free space",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; 'tuneavideo tune --resume' continues a tuning run from its last checkpoint "
              "(one stopped before its first checkpoint leaves no folder)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
