"""The web interface in a real browser: Debian's chromium driven by Playwright, against the page served on a free
local port with the bundled toy model; and the parts of the server the page relies on (queue, cancel, runs)."""

import os
import shutil
import socket
import threading
import time

import av
import numpy as np
import pytest

from tuneavideo.demo import SOURCE
from tuneavideo.toyworld import clip_caption, render_clip
from tuneavideo.video import write_video

CHROMIUM = os.environ.get("TUNEAVIDEO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NUM_FRAMES = 8

pytest.importorskip("gradio", reason="the web interface needs the 'ui' extra: pip install -e '.[test]'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kept(runs):
    """The run folders and the uploads kept for runs in a runs folder."""
    uploads = runs / ".uploads"
    return sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) + sorted(
        f".uploads/{p.name}" for p in (uploads.iterdir() if uploads.is_dir() else ()))


def toy_clip(path):
    """The demo's source clip (a red circle moving right on blue sky) as an H.264 file."""
    frames = render_clip(SOURCE, size=64)  # (f, h, w, 3) uint8
    write_video(path, frames.transpose(0, 3, 1, 2).astype(np.float32) / 255, fps=8)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tuneavideo.ui import serve

    runs = tmp_path_factory.mktemp("ui") / "runs"
    studio, page, url = serve(runs, host="127.0.0.1", port=free_port(), device="cpu", max_upload="1mb", block=False)
    yield studio, url.rstrip("/")
    page.close()
    studio.close()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium here: install Debian's chromium package (apt-get install chromium), as .ci/run does")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' installs playwright").sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """A new tab on the page, recording every address it asks for."""
    _, url = server
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    tab = context.new_page()
    tab.requested = []
    tab.on("request", lambda request: tab.requested.append(request.url))
    tab.goto(url)
    yield tab
    context.close()


def test_tune_edit_and_download_in_the_browser(server, page, tmp_path):
    """Upload a toy clip, tune 5 steps, edit two prompts: both videos play beside the source, a second tab sees the
    same run, the MP4 downloaded from the page decodes to the clip's frame count; every request stays local."""
    studio, url = server
    prompt = clip_caption(SOURCE)
    page.locator("#upload input[type=file]").set_input_files(str(toy_clip(tmp_path / "circle.mp4")))
    page.locator("#source-message").get_by_text(f"{NUM_FRAMES} frames").wait_for()
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#train-steps input").fill("5")
    page.locator("#inversion-steps input").fill("5")
    page.locator("#run-name textarea, #run-name input").first.fill("circle")
    page.locator("#start-tuning").click()
    page.locator("#my-job").get_by_text("finished").wait_for(timeout=90_000)
    assert (studio.runs_dir / "circle" / "adapter.safetensors").is_file()

    page.get_by_role("tab", name="Edit").click()
    page.locator("#edit-run input").click()
    page.get_by_role("option", name="circle").click()
    page.locator("#run-settings").get_by_text(prompt).wait_for()
    edits = ["a green circle moving right on blue sky", "a red square moving right on blue sky"]
    page.locator("#edit-prompts textarea").fill("\n".join(edits))
    page.locator("#edit-steps input").fill("5")
    page.locator("#edit-button").click()
    page.wait_for_function("() => [0, 1].every(i => { const v = document.querySelector(`#result-${i} video`); "
                           "return v !== null && v.duration > 0; })", timeout=90_000)
    durations = page.evaluate("() => ['#edit-source', '#result-0', '#result-1'].map(s => document.querySelector(`${s} video`).duration)")
    assert all(d > 0 for d in durations), durations

    link = page.locator("#files-0 a[href$='.mp4']").first
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "downloaded.mp4"
    download.value.save_as(saved)
    with av.open(str(saved)) as container:
        assert sum(1 for _ in container.decode(video=0)) == NUM_FRAMES

    second = page.context.new_page()
    second.goto(url)
    second.get_by_role("tab", name="Runs").click()
    second.locator("#runs-table").get_by_text("circle").first.wait_for()
    assert "finished" in second.locator("#runs-table").inner_text()

    outside = [address for address in page.requested + [url] if not address.startswith(url)]
    assert not outside, outside
    assert "Traceback" not in page.content()


def test_a_text_file_named_mp4_is_refused_on_the_page(server, page, tmp_path):
    studio, _ = server
    before = kept(studio.runs_dir)
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video at all\n" * 50)
    page.locator("#upload input[type=file]").set_input_files(str(fake))
    message = page.locator("#source-message .error-message")
    message.wait_for()
    assert "notes.mp4 is not a video" in message.inner_text(), message.inner_text()
    assert str(tmp_path) not in message.inner_text() and str(studio.runs_dir) not in message.inner_text()

    page.locator("#prompt textarea").fill("some notes")
    page.locator("#start-tuning").click()
    refused = page.locator("#tune-message .error-message")
    refused.wait_for()
    assert "notes.mp4 is not a video" in refused.inner_text()
    assert kept(studio.runs_dir) == before  # no run, no upload kept
    assert "Traceback" not in page.content()


def test_bad_settings_are_messages_on_the_page(server, page):
    """A size that is not a multiple of 8, too few frames and an empty prompt: one message each, no run."""
    studio, _ = server
    before = kept(studio.runs_dir)
    page.locator("#example input").click()
    page.get_by_role("option", name=clip_caption(SOURCE)).click()
    page.locator("#source-message").get_by_text("example").wait_for()
    message = page.locator("#tune-message .error-message")
    expect = pytest.importorskip("playwright.sync_api").expect

    def start_with(selector, value, expected):
        page.locator(selector).fill(value)
        page.locator("#start-tuning").click()
        expect(message).to_contain_text(expected)

    start_with("#width input", "60", "multiple of 8")
    page.locator("#width input").fill("64")
    start_with("#frames input", "20", "frames")
    page.locator("#frames input").fill("8")
    start_with("#prompt textarea", "   ", "prompt is empty")
    assert kept(studio.runs_dir) == before
    assert "Traceback" not in page.content()


def test_a_cancelled_run_keeps_its_checkpoint_and_resumes(tmp_path):
    """Jobs run one at a time in order; cancelling a waiting job drops it, cancelling a tuning job stops it after its
    step with a checkpoint, which the Runs tab's resume continues to a finished run."""
    from tuneavideo.config import RunConfig
    from tuneavideo.demo import TOY_MODEL
    from tuneavideo.ui import Job, Studio, list_runs

    studio = Studio(tmp_path / "runs", device="cpu")
    try:
        release = threading.Event()
        blocker = studio.jobs.submit(Job("edit", "blocker", lambda job: release.wait(30)))
        config = RunConfig()
        config.video.path, config.video.prompt = str(toy_clip(tmp_path / "circle.mp4")), clip_caption(SOURCE)
        config.video.num_frames = NUM_FRAMES
        config.video.width = config.video.height = 64
        config.tune.base_model, config.tune.steps = str(TOY_MODEL), 50
        config.sample.num_inversion_steps = 2
        dropped = studio.submit_tune(config, "dropped", tmp_path / "circle.mp4")
        job = studio.submit_tune(config, "circle", tmp_path / "circle.mp4")
        assert (studio.jobs.position(blocker), studio.jobs.position(dropped), studio.jobs.position(job)) == (0, 1, 2)
        assert studio.jobs.cancel(dropped) and studio.jobs.position(job) == 1
        assert not (studio.runs_dir / ".uploads" / "dropped").exists()
        release.set()
        deadline = time.time() + 60
        while job.step < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert studio.jobs.cancel(job)
        while job.state == "running" and time.time() < deadline:
            time.sleep(0.05)
        assert job.state == "cancelled", (job.state, job.error)
        [run] = list_runs(studio.runs_dir)
        assert (run.name, run.state, run.step) == ("circle", "interrupted", job.step)
        restarted = Studio(studio.runs_dir, device="cpu")  # a server started again on the folder resumes nothing
        try:
            time.sleep(0.2)
            assert restarted.jobs.snapshot() == (None, [], [])
            assert [(r.name, r.state, r.step) for r in list_runs(restarted.runs_dir)] == [("circle", "interrupted", job.step)]
        finally:
            restarted.close()
        resumed = studio.submit_resume(run, run.step + 2)
        while resumed.state in ("waiting", "running") and time.time() < deadline:
            time.sleep(0.05)
        assert resumed.state == "done", resumed.error
        assert [r.state for r in list_runs(studio.runs_dir)] == ["finished"]
    finally:
        studio.close()


def test_the_page_reads_only_the_runs_folder_and_limits_uploads(server, tmp_path):
    """Gradio's file route serves what is in the runs folder and nothing else (this test file, the system's files, a
    temporary file); an upload over the limit is refused."""
    import httpx

    studio, url = server
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    inside = studio.runs_dir / "note.txt"
    inside.write_text("in the runs folder")
    try:
        for path in (os.path.abspath(__file__), "/etc/hostname", secret):
            response = httpx.get(f"{url}/gradio_api/file={path}")
            assert response.status_code in (403, 404), (path, response.status_code)
        assert httpx.get(f"{url}/gradio_api/file={inside}").text == "in the runs folder"
        big = {"files": ("big.mp4", b"\0" * (2 * 1024 * 1024), "video/mp4")}
        assert httpx.post(f"{url}/gradio_api/upload", files=big).status_code == 413
    finally:
        inside.unlink()


def test_binding_beyond_this_machine_warns(capsys):
    from tuneavideo.ui import warn_if_exposed

    warn_if_exposed("127.0.0.1")
    assert capsys.readouterr().err == ""
    warn_if_exposed("0.0.0.0")
    assert "warning: serving on 0.0.0.0" in capsys.readouterr().err


def test_a_second_tab_follows_the_job_and_cancel_then_resume_finish_the_run(server, page):
    """While a run tunes, a second tab shows its step; Cancel stops it with a checkpoint (no adapter), the Runs tab
    lists it as interrupted and resumes it, from the page, to a finished run."""
    studio, url = server
    expect = pytest.importorskip("playwright.sync_api").expect
    page.locator("#example input").click()
    page.get_by_role("option", name=clip_caption(SOURCE)).click()
    page.locator("#source-message").get_by_text("example").wait_for()
    page.locator("#train-steps input").fill("400")
    page.locator("#inversion-steps input").fill("2")
    page.locator("#run-name textarea, #run-name input").first.fill("long")
    page.locator("#start-tuning").click()

    second = page.context.new_page()
    second.goto(url)
    expect(second.locator("#status")).to_contain_text("tuning long: step", timeout=30_000)
    expect(second.locator("#status")).to_contain_text("of 400")
    page.locator("#cancel").click()
    expect(page.locator("#my-job")).to_contain_text("cancelled at step", timeout=30_000)
    run = studio.runs_dir / "long"
    assert list((run / "checkpoints").glob("step-*.pt")) and not (run / "adapter.safetensors").exists()

    second.get_by_role("tab", name="Runs").click()
    expect(second.locator("#runs-table")).to_contain_text("interrupted at step")
    second.locator("#resume-run input").click()
    second.get_by_role("option", name="long").click()
    expect(second.locator("#resume-steps input")).to_have_value("400")
    done = len((run / "train.log").read_text().splitlines())
    second.locator("#resume-steps input").fill(str(done + 2))
    second.locator("#resume-button").click()
    expect(second.locator("#my-job")).to_contain_text("finished", timeout=60_000)
    assert (run / "adapter.safetensors").is_file()
    assert len((run / "train.log").read_text().splitlines()) == done + 2


@pytest.mark.parametrize("port", ["99999", "0", "http"])
def test_a_port_out_of_range_is_a_usage_error(capsys, port):
    from tuneavideo.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["ui", "--port", port])
    assert stop.value.code == 2 and "is not a port" in capsys.readouterr().err
