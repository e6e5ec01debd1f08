"""The local web demo (stylegan_t2i/web_demo.py).

Without a browser: the request handler on valid, empty, 10 kB and non-UTF-8 prompts (a result or
a one-line DemoError), seeds, the DDPM switch (a tiny untrained UNet made here) and the
interpolation strip; `stylegan-t2i-serve --help` and its one-line start-up errors.

In a browser (marked `browser`; skipped without Debian's `chromium` or gradio): the server in a
subprocess on a free loopback port, headless Chromium driven over the DevTools protocol on a
pipe (no WebSocket library needed) types a prompt, clicks Generate and Interpolate, and the
screenshot is checked where the first result image is; an empty prompt then shows its one-line
error; and the page asked nothing of any host but the server. STYLEGAN_T2I_SCREENSHOT=PATH keeps
the screenshot (benchmarks/web_demo_screenshot.png was made so).
"""
import asyncio
import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_t2i import TextToImage
from stylegan_t2i.diffusion import SchedulerConfig, UNet, UNetConfig
from stylegan_t2i.inference import DdpmSampler
from stylegan_t2i.web_demo import (
    MAX_PROMPT_CHARS,
    DemoError,
    DemoHandler,
    Utf8JsonBodies,
    check_prompt,
    main,
    parse_seeds,
    spawn_server,
    stop_server,
)

PROMPT = "a large blue square in the center on a white background"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def handler():
    gan = TextToImage.from_checkpoint(None, device="cpu")
    text = gan.sampler.text
    torch.manual_seed(0)
    unet = UNet(UNetConfig(resolution=8, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                           attention_resolutions=(4,), context_dim=text.text_cfg.dim, num_heads=4, groups=8))
    return DemoHandler(gan, TextToImage(DdpmSampler(unet, SchedulerConfig(), text, "cpu"), checkpoint={}))


def _one_line_error(fn, *args):
    with pytest.raises(DemoError) as e:
        fn(*args)
    message = str(e.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def test_valid_prompt_gives_one_enlarged_image_per_seed(handler):
    out = handler.generate(PROMPT, "3, 5-6", 0.7)
    assert [caption for _, caption in out] == ["seed 3", "seed 5", "seed 6"]
    assert all(img.mode == "RGB" and img.size == (256, 256) for img, _ in out)    # 32 px, 8x nearest
    again = handler.generate(f"  {PROMPT}\n".encode(), "5", 0.7)                  # UTF-8 bytes, stripped
    assert np.array_equal(np.asarray(again[0][0]), np.asarray(out[1][0]))


@pytest.mark.parametrize("prompt, words", [
    ("", "empty"), ("   \n", "empty"),
    ("x" * 10_000, f"limit is {MAX_PROMPT_CHARS}"),
    (b"a red \xff\xfe circle", "UTF-8"),            # bytes that are not UTF-8
    ("a red \udcff circle", "UTF-8"),                # a lone surrogate, as a JSON "\udcff" escape decodes
    (None, "must be text"), (42, "must be text"),
])
def test_bad_prompts_are_one_line_errors(handler, prompt, words):
    assert words in _one_line_error(handler.generate, prompt)


@pytest.mark.parametrize("seeds, words", [
    ("", "empty"), ("0-99", "limit of 16"), ("5-2", "ascending"), ("-1", "not a seed"), ("a", "not a seed"),
    ("0-99999999999999999", "limit"), (1.5, "must be text"),
])
def test_bad_seeds_are_one_line_errors(handler, seeds, words):
    assert words in _one_line_error(handler.generate, PROMPT, seeds)


def test_seed_lists_and_ranges():
    assert parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds("7, 2 9") == [7, 2, 9] and parse_seeds(4) == [4]
    assert check_prompt(" a red circle ") == "a red circle"


def test_ddpm_switch_and_bad_options(handler):
    out = handler.generate(PROMPT, "0-1", 1.0, "DDPM", 2, 2.0)
    assert len(out) == 2 and out[0][0].size == (256, 256)                         # 8 px, 32x nearest
    assert "steps" in _one_line_error(handler.generate, PROMPT, "0", 1.0, "DDPM", 0, 2.0)
    assert "steps" in _one_line_error(handler.generate, PROMPT, "0", 1.0, "DDPM", 10 ** 6, 2.0)
    assert "guidance" in _one_line_error(handler.generate, PROMPT, "0", 1.0, "DDPM", 2, float("nan"))
    assert "truncation" in _one_line_error(handler.generate, PROMPT, "0", "high")
    assert "model must be" in _one_line_error(handler.generate, PROMPT, "0", 1.0, "VAE")
    gan_only = DemoHandler(handler.pipes["GAN"])
    assert "--ddpm_checkpoint" in _one_line_error(gan_only.generate, PROMPT, "0", 1.0, "DDPM")
    with pytest.raises(DemoError, match="must be a GAN"):
        DemoHandler(handler.pipes["DDPM"])


def test_interpolation_strip_between_prompts_and_seeds(handler):
    strip = handler.interpolate(PROMPT, "a small red circle on the left on a black background", 0, 3, 4)
    assert strip.size == (4 * (4 * (32 + 2) + 2), 4 * (32 + 4))    # a 2 px border, each pixel 4x4
    same = np.asarray(handler.interpolate(PROMPT, "", 2, 2, 3))                   # one prompt, one seed
    cells = [same[8:8 + 128, x:x + 128] for x in (8, 8 + 136, 8 + 272)]
    assert np.array_equal(cells[0], cells[2]) and np.array_equal(cells[0], cells[1])
    assert "frames" in _one_line_error(handler.interpolate, PROMPT, "", 0, 1, 99)
    assert "second prompt" in _one_line_error(handler.interpolate, PROMPT, "x" * 10_000)
    assert "seed A" in _one_line_error(handler.interpolate, PROMPT, "", -1)


def _post_through_middleware(chunks: list[bytes]) -> tuple[int, bytes]:
    """POST `chunks` as a JSON body through Utf8JsonBodies to an app that echoes the body."""
    async def echo(scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)
    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(Utf8JsonBodies(echo)(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def test_middleware_refuses_non_utf8_and_oversized_json_bodies():
    assert _post_through_middleware([b'{"data": ["a red ', b'circle"]}']) == (200, b'{"data": ["a red circle"]}')
    status, body = _post_through_middleware([b'{"data": ["a red \xff circle"]}'])
    assert status == 400 and b"not valid UTF-8" in body
    status, body = _post_through_middleware([b"x" * (1 << 19)] * 3)
    assert status == 413 and b"over" in body


def test_serve_help_names_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag, words in [("--checkpoint", "demo model"), ("--ddpm_checkpoint", "DDPM"), ("--host", "127.0.0.1"),
                        ("--port", "7860"), ("--device", "auto")]:
        assert flag in text and words in text


def test_serve_start_up_errors_are_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:     # without gradio: the install command; with it: the missing file
        main(["--checkpoint", str(tmp_path / "missing.pt"), "--device", "cpu"])
    assert str(e.value).startswith("error:") and "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------
# In headless Chromium.

class Chromium:
    """Headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
    messages ending in NUL on the child's fds 3 and 4), attached to one page."""

    def __init__(self, binary: str, width: int = 1280, height: int = 1400):
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        to_chrome, self._out = os.pipe()
        self._in, from_chrome = os.pipe()
        to_chrome, from_chrome = (self._above_9(fd) for fd in (to_chrome, from_chrome))   # free 3 and 4
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
                f"--window-size={width},{height}", "about:blank"]
        redirect = f'exec "$@" 3<&{to_chrome} 4>&{from_chrome} {to_chrome}<&- {from_chrome}>&-'
        self.proc = subprocess.Popen(["bash", "-c", redirect, "bash", *args], pass_fds=(to_chrome, from_chrome),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buf, self._id, self.events = b"", 0, []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.page(f"{domain}.enable")
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    @staticmethod
    def _above_9(fd: int) -> int:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        return high

    def send(self, method: str, session: str | None = None, timeout: float = 20, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._read(deadline):
                if reply.get("id") != self._id:
                    self.events.append(reply)
                elif "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                else:
                    return reply.get("result", {})

    def _read(self, deadline: float) -> list[dict]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its pipe")
            self._buf += chunk
        *messages, self._buf = self._buf.split(b"\0")
        return [json.loads(m) for m in messages]

    def page(self, method: str, **params):
        return self.send(method, session=self.session, **params)

    def js(self, expression: str):
        r = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"].get("text"))
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := self.js(expression):
                return value
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout} s for {expression}")

    def box(self, selector: str):
        return self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null; "
                       f"const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }})()")

    def click(self, selector: str):
        """A mouse click at the element's centre once its box stops moving (the page keeps laying
        itself out for a while after it loads)."""
        self.wait_for(f"!!document.querySelector({json.dumps(selector)})")
        box, last = self.box(selector), None
        while box != last:
            time.sleep(0.5)
            box, last = self.box(selector), box
        x, y = box[0] + box[2] / 2, box[1] + box[3] / 2
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type_into(self, selector: str, text: str):
        """Select the field's text and type `text` over it (an empty `text` deletes it)."""
        self.wait_for(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                      f"if (!e) return false; e.focus(); e.select(); return true; }})()")
        if text:
            self.page("Input.insertText", text=text)
        else:
            for kind in ("keyDown", "keyUp"):
                self.page("Input.dispatchKeyEvent", type=kind, key="Delete", code="Delete", windowsVirtualKeyCode=46)

    def screenshot(self) -> Image.Image:
        return Image.open(io.BytesIO(base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"])))

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
            self.proc.wait(10)
        except (RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)
        shutil.rmtree(self.profile, ignore_errors=True)


ALL_LOADED = ("(() => {{ const imgs = [...document.querySelectorAll('{} img')]; return imgs.length >= {} && "
              "imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.map(i => i.src) : null; }})()")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (apt-get install chromium)")
def test_page_in_headless_chromium_generates_images(tmp_path):
    pytest.importorskip("gradio")
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "OMP_NUM_THREADS": "1"}
    server, url = spawn_server(["--device", "cpu"], env=env)
    browser = None
    try:
        browser = Chromium(CHROMIUM)
        browser.page("Page.navigate", url=url)
        browser.type_into("#prompt textarea", PROMPT)
        browser.click("#generate")
        srcs = browser.wait_for(ALL_LOADED.format("#results", 8))
        assert all(s.startswith(url) for s in srcs), srcs
        browser.type_into("#prompt_b textarea", "a small red circle on the left on a black background")
        browser.click("#interpolate")
        browser.wait_for(ALL_LOADED.format("#strip", 1))
        time.sleep(0.5)                                 # the images' fade-in
        shot = browser.screenshot().convert("RGB")
        if os.environ.get("STYLEGAN_T2I_SCREENSHOT"):
            shot.save(os.environ["STYLEGAN_T2I_SCREENSHOT"])
        assert browser.js("document.querySelector('#prompt textarea').value") == PROMPT
        for selector in ("#results img", "#strip img"):
            x, y, w, h = browser.box(selector)
            assert w >= 64 and h >= 64, (selector, w, h)
            region = np.asarray(shot.crop((int(x), int(y), int(x + w), int(y + h))), dtype=np.float32)
            assert region.std() > 20, (selector, region.std())       # a picture, not a blank box
        blue = np.asarray(shot.crop(tuple(int(v) for v in _inner(browser.box("#results img")))), dtype=np.float32)
        assert (blue[..., 2] - blue[..., 0]).max() > 100                # the blue square is there

        browser.type_into("#prompt textarea", "")       # an empty prompt: a one-line error in the page
        browser.click("#generate")
        browser.wait_for("document.body.innerText.includes('prompt is empty')", timeout=10)

        foreign = [u for u in browser.requested_urls()
                   if urlsplit(u).scheme not in ("data", "blob") and not u.startswith(url)]
        assert not foreign, foreign                     # no fonts, scripts or analytics from the internet
    finally:
        if browser is not None:
            browser.close()
        stop_server(server)


def _inner(box):
    """The middle half of a box (x0, y0, x1, y1), away from the caption and the frame."""
    x, y, w, h = box
    return x + w / 4, y + h / 4, x + 3 * w / 4, y + 3 * h / 4
