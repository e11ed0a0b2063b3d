"""Take docs/ui-edit.png: the Edit tab after the demo's three edits, in Debian's chromium driven by Playwright.

    python docs/ui_screenshot.py [--output docs/ui-edit.png] [--chromium /usr/bin/chromium]

Serves a new runs folder in a temporary directory, uploads the demo's clip, tunes the bundled toy model with the
demo's settings, edits it with the demo's prompts and photographs the page (a few minutes on a CPU).
"""

import argparse
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np
import torch
from playwright.sync_api import sync_playwright

from tuneavideo.demo import EDITS, SOURCE, DemoSettings
from tuneavideo.toyworld import clip_caption, render_clip, with_attributes
from tuneavideo.ui import serve
from tuneavideo.video import write_video

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(Path(__file__).with_name("ui-edit.png")), help="the PNG to write")
    parser.add_argument("--chromium", default=shutil.which("chromium"), help="the chromium executable")
    parser.add_argument("--tune-screenshot", help="also photograph the Tune tab while tuning, into this PNG")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the toy model is small: one thread is as fast
    settings = DemoSettings()
    with tempfile.TemporaryDirectory() as folder, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        clip = Path(folder) / "red-circle.mp4"
        write_video(clip, render_clip(SOURCE, size=settings.size).transpose(0, 3, 1, 2).astype(np.float32) / 255, fps=8)
        studio, app, url = serve(Path(folder) / "runs", port=port, device="cpu", block=False)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, args=ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url)
                page.locator("#upload input[type=file]").set_input_files(str(clip))
                page.locator("#source-message").get_by_text("frames").wait_for()
                page.locator("#prompt textarea").fill(clip_caption(SOURCE))
                page.locator("#train-steps input").fill(str(settings.train_steps))
                page.locator("#inversion-steps input").fill(str(settings.steps))
                page.locator("#run-name input, #run-name textarea").first.fill("red-circle")
                page.locator("#start-tuning").click()
                if args.tune_screenshot:
                    page.wait_for_function(f"() => Number((/step (\\d+) of/.exec(document.querySelector('#status').innerText) "
                                           f"|| [0, 0])[1]) >= {settings.train_steps // 2}", timeout=300_000)
                    page.screenshot(path=args.tune_screenshot, full_page=True)
                page.locator("#my-job").get_by_text("finished").wait_for(timeout=600_000)
                page.get_by_role("tab", name="Edit").click()
                page.locator("#edit-run input").click()
                page.get_by_role("option", name="red-circle").click()
                prompts = [clip_caption(with_attributes(SOURCE, **change)) for change in EDITS]
                page.locator("#edit-prompts textarea").fill("\n".join(prompts))
                page.locator("#edit-steps input").fill(str(settings.steps))
                page.locator("#edit-button").click()
                page.wait_for_function(f"() => [...Array({len(prompts)}).keys()].every(i => {{ const v = "
                                       "document.querySelector(`#result-${i} video`); return v !== null && v.duration > 0; })",
                                       timeout=300_000)
                # every video on its first frame: the picture does not depend on when it is taken
                page.evaluate("() => document.querySelectorAll('video').forEach(v => { v.pause(); v.currentTime = 0; })")
                page.wait_for_timeout(500)
                page.locator("#results").scroll_into_view_if_needed()
                page.screenshot(path=args.output, full_page=True)
                browser.close()
        finally:
            app.close()
            studio.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
