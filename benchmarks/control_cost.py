"""Seconds and peak memory of a controlled edit against a plain one, on the CPU, through the command line.

The demo's run (the bundled toy model tuned on its clip) is made once; each variant then edits a fresh copy of it
in a fresh process, ``tuneavideo edit RUN --prompt P1 --prompt P2`` with the demo's sampling settings, so that
nothing cached by another variant helps it. Each edit's JSON holds its seconds and the process's peak memory
(``peak_memory_mib``, the resident set on the CPU): the first prompt pays for the inversion (and FateZero's record),
the second reuses them.

Usage: ``python benchmarks/control_cost.py`` (a few minutes on one CPU core; ``--out`` JSON). Prints a markdown
table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tuneavideo.demo import EDITS, SOURCE, DemoSettings, run_demo
from tuneavideo.runfolder import slug
from tuneavideo.toyworld import clip_caption, with_attributes

#: The variants: their flags of ``tuneavideo edit`` (the blend word is the source's object).
VARIANTS = {
    "plain": [],
    "negative-prompt": ["--inversion", "negative-prompt"],
    "null-text": ["--inversion", "null-text"],
    "p2p": ["--inversion", "null-text", "--control", "p2p"],
    "p2p-blend": ["--inversion", "null-text", "--control", "p2p", "--blend", SOURCE.shape],
    "fatezero": ["--inversion", "null-text", "--control", "fatezero", "--blend", SOURCE.shape],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="also write the figures here (JSON)")
    args = parser.parse_args(argv)
    settings = DemoSettings()
    prompts = [clip_caption(with_attributes(SOURCE, **change)) for change in EDITS[:2]]
    sampling = ["--steps", str(settings.steps), "--inversion-steps", str(settings.steps),
                "--guidance", str(settings.guidance_scale), "--seed", str(settings.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        demo = run_demo(Path(work) / "demo", progress=False, log=lambda *_: None)
        for name, flags in VARIANTS.items():
            run = Path(work) / name
            shutil.copytree(demo / "run", run)
            out = Path(work) / f"{name}-edits"
            command = [sys.executable, "-m", "tuneavideo.cli", "edit", str(run), *sum((["--prompt", p] for p in prompts), []),
                       "--output", str(out), *sampling, *flags]
            subprocess.run(command, check=True, env=env, capture_output=True)
            records = [json.loads((out / f"{slug(p)}.json").read_text()) for p in prompts]
            rows[name] = {"first_s": records[0]["seconds"], "second_s": records[1]["seconds"],
                          "peak_mib": max(r["peak_memory_mib"] for r in records), "memory": records[0]["memory"]}
            print(f"{name} done", file=sys.stderr, flush=True)
    print(f"| variant | first prompt (s) | second prompt (s) | peak memory (MiB, {rows['plain']['memory']}) |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['first_s']:.1f} | {row['second_s']:.1f} | {row['peak_mib']:.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": settings.__dict__, "prompts": prompts, "variants": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
