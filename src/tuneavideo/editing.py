"""Editing: load a tuned run (ours, or the reference's saved pipeline) and sample edited videos."""

from __future__ import annotations

import copy
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from . import __version__
from .adapter import load_adapter
from .config import RunConfig, SampleConfig, VideoConfig, parse_reweight
from .inversion import ddim_invert, null_text_optimise
from .loading import BaseModel, load_base
from .meter import measure
from .pipeline import TuneAVideoPipeline
from .runfolder import (ADAPTER, CONFIG, EDITS, INVERSION, INVERSIONS, SOURCE, PromptInversionFile, RunError, atomic_json,
                        find_inversion, first_line, frames_key, latest_checkpoint, prompt_inversion_path, read_inversion,
                        read_prompt_inversion, slug, write_inversion, write_prompt_inversion)
from .tuning import (base_key, build_pipeline, build_video_unet, place, progress_bar, resolve_device, resolve_precision,
                     vae_key)
from .video import probe_video, read_video, side_by_side, write_video
from .windows import FrameWindows


def _note(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class TunedModel:
    """A tuned video model ready to edit: the pipeline, its run config, and the inverted source.

    ``config.video`` is the clip edited: the tuned clip, or other frames of its source video (``tuned_clip`` then says
    which frames tuning used; their count is the default window, :mod:`tuneavideo.windows`)."""

    pipe: TuneAVideoPipeline
    config: RunConfig
    run_dir: Path
    source: torch.Tensor | None  # (f, 3, h, w) in [0, 1]
    inverted: torch.Tensor | None  # (1, c, f, h/8, w/8)
    dtype: torch.dtype
    inversion_steps: int | None = None  # steps behind ``inverted``; None when given from outside
    # The identity of the base (runfolder.fingerprint): the key of the run folder's inversion cache; None: no cache
    # (a reference folder, or a source video given from outside).
    base_key: str | None = None
    source_latents: torch.Tensor | None = None  # (1, c, f, h/8, w/8): the latents tuning inverted, when they fit this base
    base_model: str | None = None  # the base the edit runs on, when not the run's own
    # The inversion with the source prompt (negative-prompt and null-text inversion), once made or read
    prompt_inverted: PromptInversionFile | None = None
    tuned_clip: VideoConfig | None = None  # the tuned frames, when config.video holds others; None: the same, or unknown
    inversion_frames: str = ""  # the frames behind ``inverted`` (runfolder.frames_key; empty: the tuned clip, unwindowed)
    # FateZero's record of the source's attention (control.AttentionRecord) and the settings it was made with: every
    # edit prompt with those settings fuses with the same record, so it is made once
    fatezero_record: tuple[tuple, object] | None = None

    def windows(self, sample: SampleConfig) -> FrameWindows | None:
        """The windows ``sample`` asks for on this clip (``window`` 0: the tuned clip's length); None: the whole clip
        at once, as tuned."""
        tuned = (self.tuned_clip or self.config.video).num_frames
        return FrameWindows.resolve(sample.window, sample.overlap, tuned, self.config.video.num_frames)

    def frames(self, sample: SampleConfig) -> str:
        """The name of the frames inverted, for the run folder's cache (:func:`~tuneavideo.runfolder.frames_key`):
        empty for the tuned clip run whole."""
        vc, windows = self.config.video, self.windows(sample)
        if windows is None and self.tuned_clip is None:
            return ""
        return frames_key(vc.start, vc.stride, vc.num_frames, *((windows.size, windows.overlap) if windows else ()))

    def _source_mean(self) -> torch.Tensor:
        """The source latents ``(1, c, f, h/8, w/8)``: those tuning used (stored in the run folder); only without
        them (a reference folder, an older run, another VAE) are the source frames encoded again."""
        mean = self.source_latents
        if mean is None:
            if self.source is None:
                raise RunError(f"{self.run_dir} has no source video to invert; pass --video, --inv-latents or --no-inversion")
            mean, _ = self.pipe.encode_video(self.source)
        return mean.to(self.pipe.unet.device)

    def _source_prompt(self, what: str) -> str:
        prompt = self.config.video.prompt
        if not prompt.strip():
            raise RunError(f"{what} needs the prompt the source was tuned with, and {self.run_dir} has none; "
                           "give the reference config with --config")
        return prompt

    def invert(self, steps: int | None = None, progress: bool = True, sample: SampleConfig | None = None) -> torch.Tensor:
        """DDIM-invert the source latents with the empty prompt (in the windows ``sample`` asks for, default the run's
        sample settings), keep the result, and cache it in the run folder."""
        sample = sample or self.config.sample
        steps = steps or sample.num_inversion_steps
        windows, frames = self.windows(sample), self.frames(sample)
        mean = self._source_mean()
        empty = self.pipe.encode_prompt([""]).to(self.dtype)
        bar = progress_bar(None, progress, desc="inverting", total=steps)
        self.inverted = ddim_invert(self.pipe.unet, self.pipe.scheduler, mean, empty, steps,
                                    callback=lambda i, n: bar.update(1) if bar else None, windows=windows)
        self.inversion_steps, self.inversion_frames = steps, frames
        if bar:
            bar.close()
        if self.base_key is not None and self.inverted.isfinite().all():
            try:
                write_inversion(self.run_dir, self.inverted, steps=steps, base_key=self.base_key,
                                base_model=self.base_model or self.config.tune.base_model, frames=frames)
            except OSError as error:  # a read-only run folder: the edit goes on without the cache
                _note(f"note: cannot keep the inversion in {self.run_dir / INVERSIONS} ({error.strerror or error}); "
                      "the next edit inverts again")
        return self.inverted

    def invert_with_prompt(self, sample: SampleConfig, progress: bool = True) -> PromptInversionFile:
        """The DDIM inversion with the source prompt (negative-prompt inversion, Miyake et al. 2023) and, for
        ``sample.inversion == "null-text"``, its unconditional embeddings optimised for ``sample.guidance_scale``
        (:func:`~tuneavideo.inversion.null_text_optimise`): kept in memory and in the run folder's
        ``prompt-inversion.safetensors``, made again (with a note) when the steps, guidance or base differ."""
        steps, guidance = sample.num_inversion_steps, sample.guidance_scale
        null = sample.inversion == "null-text"
        prompt = self._source_prompt(f"--inversion {sample.inversion}")
        key = self.base_key or ""
        windows, frames = self.windows(sample), self.frames(sample)

        def fits(found: PromptInversionFile | None) -> bool:
            return (found is not None and found.steps == steps and found.base_key == key and found.prompt == prompt
                    and found.frames == frames
                    and (not null or (found.null_embeddings is not None and found.guidance_scale == guidance)))

        found = self.prompt_inverted
        if not fits(found) and self.base_key is not None:
            cached = read_prompt_inversion(self.run_dir, self.config.video.num_frames, frames)
            if fits(cached):
                found = cached
            elif cached is not None and (cached.null_embeddings is not None or not null):
                made = f"{cached.steps} steps" + (f" at guidance {cached.guidance_scale:g}" if cached.null_embeddings is not None else "")
                _note(f"note: {prompt_inversion_path(self.run_dir, frames)} was made with {made} (or another base); inverting "
                      f"again with {steps} steps" + (f" at guidance {guidance:g}" if null else ""))
        if fits(found):
            self.prompt_inverted = found
            return found

        context = self.pipe.encode_prompt([prompt]).to(self.dtype)
        bar = progress_bar(None, progress, desc="inverting with the source prompt", total=steps)
        trajectory = ddim_invert(self.pipe.unet, self.pipe.scheduler, self._source_mean(), context, steps,
                                 callback=lambda i, n: bar.update(1) if bar else None, return_trajectory=True,
                                 windows=windows)
        if bar:
            bar.close()
        embeddings = None
        if null:
            empty = self.pipe.encode_prompt([sample.negative_prompt])
            bar = progress_bar(None, progress, desc="null-text optimisation", total=steps)
            embeddings = null_text_optimise(self.pipe.unet, self.pipe.scheduler, trajectory, context, empty, guidance,
                                            callback=lambda i, n: bar.update(1) if bar else None, windows=windows)
            if bar:
                bar.close()
        found = PromptInversionFile(trajectory[-1], steps, key, prompt, embeddings, guidance if null else None, frames)
        self.prompt_inverted = found
        if self.base_key is not None and trajectory[-1].isfinite().all():
            try:
                write_prompt_inversion(self.run_dir, found)
            except OSError as error:  # a read-only run folder: the edit goes on without the cache
                _note(f"note: cannot keep the inversion in {prompt_inversion_path(self.run_dir, frames)} ({error.strerror or error}); "
                      "the next edit inverts again")
        return found

    def sample(self, prompt: str, sample: SampleConfig, progress: bool = True) -> torch.Tensor:
        """One edited video ``(f, 3, h, w)`` in [0, 1] for ``prompt``, with the inversion and the attention control
        ``sample`` asks for (:mod:`tuneavideo.control`)."""
        if sample.inversion != "ddim" or sample.control != "none":
            return self._controlled_sample(prompt, sample, progress)
        vc = self.config.video
        latents = self._ddim_latents(sample, progress) if sample.use_inversion else None
        generator = torch.Generator(self.pipe.unet.device).manual_seed(sample.seed)
        bar = progress_bar(None, progress, desc=f"sampling '{prompt[:40]}'", total=sample.num_inference_steps)
        video = self.pipe(
            prompt, vc.num_frames, vc.height, vc.width, sample.num_inference_steps, sample.guidance_scale,
            sample.negative_prompt, sample.eta, generator, latents, callback=lambda i, n: bar.update(1) if bar else None,
            windows=self.windows(sample),
        )[0]
        if bar:
            bar.close()
        return video

    def _ddim_latents(self, sample: SampleConfig, progress: bool) -> torch.Tensor:
        """The DDIM inversion with the empty prompt in ``sample.num_inversion_steps`` (and ``sample``'s windows): kept,
        cached, or made."""
        steps, frames = sample.num_inversion_steps, self.frames(sample)
        if self.inverted is None or (self.inversion_steps is not None and (self.inversion_steps, self.inversion_frames) != (steps, frames)):
            cached = (find_inversion(self.run_dir, self.base_key, steps, self.config.video.num_frames, frames=frames)
                      if self.base_key else None)
            if cached is not None:
                self.inverted, self.inversion_steps = cached.latents.to(self.pipe.unet.device), steps
                self.inversion_frames = frames
            elif self.inverted is None or self.source is not None or self.source_latents is not None:
                self.invert(steps, progress, sample)
        return self.inverted

    def _fatezero_record(self, sample: SampleConfig, source_prompt: str, size: tuple[int, int], progress: bool):
        """FateZero's record of the source's attention under ``sample``'s steps, fractions, blend words, threshold and
        windows: kept from an earlier edit with the same settings, or recorded while inverting with the source prompt."""
        from .control import record_attention

        key = (sample.num_inference_steps, sample.cross_replace, sample.self_replace, tuple(sample.blend),
               sample.blend_threshold, source_prompt, self.frames(sample), sample.window, sample.overlap)
        if self.fatezero_record is not None and self.fatezero_record[0] == key:
            return self.fatezero_record[1]
        self.fatezero_record = None  # the old record's memory goes before the new one is made
        pipe = self.pipe
        context = pipe.encode_prompt([source_prompt]).to(self.dtype)
        bar = progress_bar(None, progress, desc="recording attention", total=sample.num_inference_steps)
        _, record = record_attention(pipe.unet, pipe.scheduler, self._source_mean(), context, pipe.tokenizer, sample,
                                     source_prompt, latent_size=size, callback=lambda i, n: bar.update(1) if bar else None,
                                     windows=self.windows(sample))
        if bar:
            bar.close()
        self.fatezero_record = (key, record)
        return record

    def _controlled_sample(self, prompt: str, sample: SampleConfig, progress: bool) -> torch.Tensor:
        """The edit with negative-prompt or null-text inversion, and P2P or FateZero attention control. The rows
        sampled: ``[edit]`` (none, fatezero) or ``[source, edit]`` (p2p); each row's unconditional embedding is the
        inversion's (null-text: one per step; negative-prompt: the source prompt's), except the edit's under
        Video-P2P's decoupled guidance (the default with control), which keeps the plain one (``negative_prompt``)."""
        from .control import build_controller

        vc, pipe = self.config.video, self.pipe
        device = pipe.unet.device
        size = (vc.height // pipe.latent_scale, vc.width // pipe.latent_scale)
        steps = sample.num_inference_steps
        windows = self.windows(sample)
        if sample.inversion == "ddim":
            latents, inverted_uncond = self._ddim_latents(sample, progress), None
        else:
            found = self.invert_with_prompt(sample, progress)
            latents = found.latents.to(device)
            if sample.inversion == "null-text":
                inverted_uncond = found.null_embeddings.to(device)  # (steps, 1, l, d)
            else:
                inverted_uncond = pipe.encode_prompt([found.prompt])[None].expand(steps, -1, -1, -1)
        controller, prompts = None, [prompt]
        if sample.control != "none":
            source_prompt = self._source_prompt(f"--control {sample.control}")
            record = None
            if sample.control == "fatezero":
                record = self._fatezero_record(sample, source_prompt, size, progress)
            else:
                prompts = [source_prompt, prompt]
            controller = build_controller(pipe.tokenizer, sample, source_prompt, prompt, num_frames=vc.num_frames,
                                          latent_size=size, record=record)
        uncond = None
        if inverted_uncond is not None:
            plain = pipe.encode_prompt([sample.negative_prompt])[None].expand(steps, -1, -1, -1)
            edit_uncond = inverted_uncond if sample.coupled_guidance or controller is None else plain
            uncond = torch.cat([inverted_uncond, edit_uncond] if len(prompts) == 2 else [edit_uncond], dim=1)
        generator = torch.Generator(device).manual_seed(sample.seed)
        bar = progress_bar(None, progress, desc=f"sampling '{prompt[:40]}'", total=steps)
        videos = pipe(prompts, vc.num_frames, vc.height, vc.width, steps, sample.guidance_scale, sample.negative_prompt,
                      sample.eta, generator, latents, callback=lambda i, n: bar.update(1) if bar else None,
                      uncond_embeddings=uncond, controller=controller, windows=windows)
        if bar:
            bar.close()
        return videos[-1]


def load_run(
    run_dir: str | Path,
    *,
    base_model: str | BaseModel | None = None,
    device: str | torch.device | None = None,
    mixed_precision: str = "auto",
    video: str | None = None,
    inv_latents: str | Path | None = None,
    num_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    start: int | None = None,
    stride: int | None = None,
    resize: str | None = None,
    config: RunConfig | None = None,
    all_frames: bool = False,
) -> TunedModel:
    """Load a run folder written by ``tuneavideo tune``, or a pipeline folder saved by the reference.

    ``base_model`` swaps the base the adapter is applied to (e.g. a DreamBooth model of the same
    Stable Diffusion version). For a reference folder, give the frame count and size, or
    ``inv_latents`` (its ``inv_latents/ddim_latent-*.pt``) from which they are read, and with ``video``
    the frames it was tuned on: ``start``, ``stride`` and ``resize`` (default squash, as the reference reads
    videos), or ``config``, the reference config it was tuned with (``RunConfig.load`` of its YAML), which
    also gives the sampling settings and prompts. A run folder has its own config and source.

    Frames in both: ``range(start, len, stride)[:num_frames]`` of the video, as tuning samples them; ``all_frames``:
    all of that range (in place of ``num_frames``). For a run folder, what is not given is the tuned clip's; other
    frames than the tuned clip are read from the video it was tuned on (its original file, ``config.video.path``, or
    ``video``), at the run's size and resize mode, and edited with the adapter unchanged, in windows of the tuned
    length (:mod:`tuneavideo.windows`); their inversions are cached in the run folder like the tuned clip's.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist; give the --output folder of 'tuneavideo tune'")
    if all_frames and num_frames is not None:
        raise RunError(f"--all-frames and --num-frames {num_frames}: give one of them")
    device = resolve_device(device)
    dtype = resolve_precision(mixed_precision, device)
    inverted = _read_latents(inv_latents) if inv_latents else None
    inversion_steps = key = source_latents = label = tuned_clip = source = None

    if (run_dir / CONFIG).is_file():
        if config is not None:
            raise RunError(f"--config: {run_dir} is a run folder with its own {CONFIG}; drop --config (it is for reference folders)")
        config = RunConfig.load(run_dir / CONFIG)
        vc = config.video
        if resize is not None and resize != vc.resize:
            raise RunError(f"--resize {resize}: {run_dir} was tuned with --resize {vc.resize}, and its frames are read so; drop --resize")
        if not (run_dir / ADAPTER).is_file():
            advice = (f"resume it with 'tuneavideo tune --output {run_dir} --resume'" if latest_checkpoint(run_dir)
                      else "it has no checkpoint to resume from: tune again into a new folder")
            raise RunError(f"{run_dir} has no {ADAPTER}: tuning did not finish; {advice}")
        _check_size({"--width": width, "--height": height}, vc, f"{run_dir} was tuned on")  # a tuned model edits at the size it learnt
        if all_frames and video is None:
            _check_tuned_video(vc, run_dir)
        edited = _frames_asked(vc, num_frames, start, stride, all_frames, video or vc.path)
        if edited != vc:  # other frames than the tuned clip: from the video itself, before any model loads
            if video is None:
                _check_tuned_video(vc, run_dir)
            tuned_clip, config.video = vc, edited
            vc = edited
        if video is not None or tuned_clip is not None:
            source = read_video(video or vc.path, num_frames=vc.num_frames, start=vc.start, stride=vc.stride,
                                width=vc.width, height=vc.height, resize=vc.resize)
        own_clip = video is None and tuned_clip is None  # the run's own tuned frames: its stored latents and inversions serve
        saved = read_inversion(run_dir / INVERSION, vc.num_frames) if own_clip and (run_dir / INVERSION).is_file() else None
        base = base_model if isinstance(base_model, BaseModel) else load_base(base_model or config.tune.base_model, dtype=torch.float32)
        key = base_key(base) if video is None else None
        unet = build_video_unet(base, config.tune.frame_attention, config.tune.frame_norms)
        load_adapter(unet, run_dir / ADAPTER)
        if source is None and (run_dir / SOURCE).is_file():
            source = read_video(run_dir / SOURCE, num_frames=vc.num_frames, width=vc.width, height=vc.height)
        if video is None:
            label = base.source if base_model is not None else None
        if own_clip:
            own_base = base_model is None or base_model == config.tune.base_model
            if saved is not None and saved.source_latents is not None and saved.vae_key == vae_key(base):
                source_latents = saved.source_latents
            if inverted is None and saved is not None:
                if saved.base_key == key or (saved.base_key is None and own_base):
                    inverted, inversion_steps = saved.latents, saved.steps
                else:
                    _note(f"note: {INVERSION} was computed with another base model than {label or config.tune.base_model}; "
                          f"the edit inverts the source again with this one and keeps the result in {run_dir / INVERSIONS}")
    elif (run_dir / "model_index.json").is_file():
        base = load_base(run_dir, dtype=torch.float32)
        unet = build_video_unet(base)
        if config is None:
            config = RunConfig()
            config.video.resize = "squash"  # how the reference reads its training video
            if video is not None and start is None and stride is None:
                _note("note: reading --video from its first frame, every frame; if the reference tuned on other frames "
                      "(its configs use sample_start_idx and sample_frame_rate, e.g. 2), give --start/--stride or --config")
        else:
            tuned_clip = copy.deepcopy(config.video)  # what the reference config tuned on: the default window
        config = copy.deepcopy(config)
        config.tune.base_model = str(run_dir)
        vc = config.video
        for name, value in {"start": start, "stride": stride, "resize": resize}.items():
            if value is not None:
                setattr(vc, name, value)
        if inverted is not None:
            scale = _pixels_per_latent(base)
            vc.num_frames, vc.height, vc.width = inverted.shape[2], inverted.shape[3] * scale, inverted.shape[4] * scale
            _check_size({"--num-frames": num_frames, "--width": width, "--height": height}, vc, f"--inv-latents {inv_latents} hold")
        if all_frames:
            if video is None:
                raise RunError("--all-frames reads the frames of --video; give --video (the clip the reference was tuned on)")
            vc.num_frames = _frames_asked(vc, None, None, None, True, video).num_frames
        vc.num_frames = num_frames or vc.num_frames
        vc.width = width or vc.width
        vc.height = height or vc.height
        if tuned_clip is not None and tuned_clip.num_frames == vc.num_frames:
            tuned_clip = None
    else:
        raise RunError(f"{run_dir} is neither a tuneavideo run folder ({CONFIG}) nor a saved pipeline (model_index.json)")

    scale = _pixels_per_latent(base)
    if inverted is not None and tuple(inverted.shape[2:]) != (vc.num_frames, vc.height // scale, vc.width // scale):
        raise RunError(f"the inverted latents have shape {tuple(inverted.shape)}, but {run_dir} edits {vc.num_frames} frames "
                       f"at {vc.width}x{vc.height} (latents of {vc.height // scale}x{vc.width // scale}); give the latents of this run")
    config.validate()
    if video is not None and source is None:
        source = read_video(video, num_frames=vc.num_frames, start=vc.start, stride=vc.stride, width=vc.width, height=vc.height, resize=vc.resize)

    pipe = build_pipeline(base, unet, log=_note)
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        place(module, device, dtype).eval()
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        module.requires_grad_(False)
    if inverted is not None:
        inverted = inverted.to(device)
    return TunedModel(pipe, config, run_dir, source, inverted, dtype, inversion_steps, key, source_latents, label,
                      tuned_clip=tuned_clip)


def _frames_asked(vc: VideoConfig, num_frames: int | None, start: int | None, stride: int | None, all_frames: bool,
                  path: str | Path) -> VideoConfig:
    """``vc`` with the frames asked for: ``num_frames`` frames (or, with ``all_frames``, every one to the end of the
    video ``path``) from ``start`` at ``stride``, each ``vc``'s own when not given."""
    start = vc.start if start is None else start
    stride = vc.stride if stride is None else stride
    if start < 0 or stride < 1 or (num_frames is not None and num_frames < 1):
        raise RunError(f"--num-frames {num_frames} --start {start} --stride {stride}: give at least 1 frame, a start of 0 "
                       "or more and a stride of at least 1")
    count = num_frames or vc.num_frames
    if all_frames:
        total = probe_video(path).num_frames
        count = len(range(start, total, stride))
        if count == 0:
            raise RunError(f"--all-frames from frame {start}: {path} has only {total} frames; give a --start below {total}")
    return replace(vc, num_frames=count, start=start, stride=stride)


def _check_tuned_video(vc: VideoConfig, run_dir: Path) -> None:
    if not Path(vc.path).exists():
        raise RunError(f"{vc.path}, the video {run_dir} was tuned on, is not there; other frames than the tuned ones are "
                       "read from it: run from the folder tuning ran in, or give the video with --video")


def _pixels_per_latent(base: BaseModel) -> int:
    return 2 ** (len(base.vae.config.block_out_channels) - 1)


def _check_size(asked: dict[str, int | None], vc, what: str) -> None:
    """Refuse a frame count or size other than the one the latents or the tuned model have."""
    have = {"--num-frames": vc.num_frames, "--width": vc.width, "--height": vc.height}
    for flag, value in asked.items():
        if value is not None and value != have[flag]:
            raise RunError(f"{flag} {value}: {what} {vc.num_frames} frames at {vc.width}x{vc.height}; "
                           f"drop {flag} (it is for reference folders without inverted latents)")


def _read_latents(path: str | Path) -> torch.Tensor:
    """Inverted latents ``(1, c, f, h, w)`` from a ``.safetensors`` file (key ``latents``) or the reference's ``.pt``."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"inverted latents {path} do not exist; check the path")
    try:
        if path.suffix == ".safetensors":
            latents = load_file(path).get("latents")
        else:
            latents = torch.load(path, map_location="cpu", weights_only=True)  # the reference's ddim_latent-*.pt
    except Exception as error:  # truncated or not a tensor file: safetensors and torch raise several types
        raise RunError(f"cannot read inverted latents {path} ({first_line(error)}); give an inv_latents/ddim_latent-*.pt file") from None
    if not torch.is_tensor(latents) or latents.ndim != 5 or latents.shape[0] != 1:
        raise RunError(f"{path} does not hold video latents (1, c, f, h, w); give an inv_latents/ddim_latent-*.pt file")
    if not latents.isfinite().all():
        raise RunError(f"inverted latents {path} hold NaN or infinite values; invert again or pass --no-inversion")
    return latents


@dataclass
class EditResult:
    videos: list[torch.Tensor]  # one (f, 3, h, w) video in [0, 1] per prompt
    files: list[Path]


def edit(
    tuned: TunedModel,
    prompts: list[str] | None = None,
    sample: SampleConfig | None = None,
    output_dir: str | Path | None = None,
    fps: float = 8,
    progress: bool = True,
) -> EditResult:
    """Write, for each prompt, an MP4 (H.264), a GIF and a JSON of its parameters, then one
    side-by-side MP4 (source | edits). Returns the videos and the written paths. Without ``prompts``, the
    prompts the run holds (``sample.prompts``: a reference config's validation prompts), with a note."""
    if not prompts and tuned.config.sample.prompts:
        prompts = list(tuned.config.sample.prompts)
        _note(f"note: no edit prompt given (--prompt); editing with the {len(prompts)} prompt{'s' if len(prompts) != 1 else ''} of the run's config "
              "(sample.prompts): " + "; ".join(f"'{p}'" for p in prompts))
    prompts = [p for p in prompts or [] if p is not None]
    if not prompts or any(not p.strip() for p in prompts):
        raise RunError("no edit prompt given (or an empty one); pass --prompt 'your edit' at least once")
    sample = sample or tuned.config.sample
    replace(tuned.config, sample=sample).validate("edit")
    windows = tuned.windows(sample)  # an overlap the (tuned) window cannot hold fails here, before any work
    if windows is not None:
        _note(f"note: {tuned.config.video.num_frames} frames, in windows of {windows.size} sharing {windows.overlap} "
              "(--window, --overlap)")
    if sample.inversion != "ddim" or sample.control != "none":  # the words and the source prompt, before any work
        from .control import plan_tokens

        what = f"--control {sample.control}" if sample.control != "none" else f"--inversion {sample.inversion}"
        source_prompt = tuned._source_prompt(what)
        for prompt in prompts if sample.control != "none" else []:
            plan_tokens(tuned.pipe.tokenizer, source_prompt, prompt, parse_reweight(sample.reweight), sample.blend,
                        blend_in_source=sample.control == "fatezero")
    if not (isinstance(fps, (int, float)) and 0 < fps < 1000):
        raise RunError(f"fps {fps} must be a positive frame rate; use e.g. --fps 8")
    out = Path(output_dir) if output_dir else tuned.run_dir / EDITS
    if out.exists() and not out.is_dir():
        raise RunError(f"output {out} is a file, not a folder; pick a folder path for --output")
    videos, usages = [], []
    for prompt in prompts:
        with measure(tuned.pipe.unet.device) as usage:  # seconds and peak memory of each edit, kept in its JSON
            videos.append(tuned.sample(prompt, sample, progress))
        usages.append(usage)
    row = ([tuned.source] if tuned.source is not None else []) + videos
    side = side_by_side(row)  # checked before anything is written: a failure leaves no files
    created = not out.exists()
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for prompt, video, usage in zip(prompts, videos, usages):
            stem = _unique(out, slug(prompt))
            for path in (out / f"{stem}.mp4", out / f"{stem}.gif"):
                written.append(path)
                write_video(path, video, fps)
            written.append(out / f"{stem}.json")
            atomic_json(written[-1], {**_record(tuned, prompt, sample, fps), **usage})
        stem = _unique(out, "side-by-side")
        written.append(out / f"{stem}.mp4")
        write_video(written[-1], side, fps)
        record = {"columns": (["source"] if tuned.source is not None else []) + prompts, **_record(tuned, None, sample, fps)}
        written.append(out / f"{stem}.json")
        atomic_json(written[-1], record)
    except BaseException:
        for path in written:  # no half-written edit: its files go, and the folder if this edit made it
            path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return EditResult(videos, written)


def _record(tuned: TunedModel, prompt: str | None, sample: SampleConfig, fps: float) -> dict:
    params = asdict(replace(sample, prompts=[]))
    params.pop("prompts")
    vc = tuned.config.video
    windows = tuned.windows(sample)
    record = {"prompt": prompt} if prompt is not None else {}
    record.update(
        run_dir=str(tuned.run_dir), base_model=tuned.base_model or tuned.config.tune.base_model, source_prompt=vc.prompt,
        num_frames=vc.num_frames, start=vc.start, stride=vc.stride, width=vc.width, height=vc.height, fps=fps,
        dtype=str(tuned.dtype).replace("torch.", ""), tuneavideo_version=__version__, **params,
        frame_windows={"window": windows.size, "overlap": windows.overlap} if windows else None,
    )
    return record


def _unique(folder: Path, stem: str) -> str:
    candidate, n = stem, 2
    while any((folder / f"{candidate}{ext}").exists() for ext in (".mp4", ".gif", ".json")):
        candidate, n = f"{stem}-{n}", n + 1
    return candidate
