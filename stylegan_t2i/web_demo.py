"""A local web demo over the Python API (issue 16 item 6): `stylegan-t2i-serve` opens a Gradio
page with a prompt box, seeds, truncation, a GAN/DDPM switch (steps and guidance for the DDPM),
an image grid and an interpolation strip.

    pip install -e ".[demo]"
    stylegan-t2i-serve                                  # http://127.0.0.1:7860, the demo GAN
    stylegan-t2i-serve --ddpm_checkpoint path/to/ddpm.pt --port 8000

`DemoHandler` does the request handling (prompt, seed and option checks; one model thread, so
that two requests never sample at once on a small CPU) and imports no Gradio, so it is tested without it.
`build_app` wraps it in a page whose queue runs one request at a time; a bad request is a
one-line error in the page, never a traceback. The page is made for an offline machine:
analytics off, no share link, system fonts only, so it asks nothing of the internet.
"""
from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from stylegan_t2i.checkpoint import CheckpointError
from stylegan_t2i.images import make_grid, to_uint8
from stylegan_t2i.inference import DEMO_MODEL, seeded_normal
from stylegan_t2i.pipeline import TextToImage, upscale_nearest

MAX_PROMPT_CHARS = 1000     # Longer prompts are refused (the text encoder keeps far fewer tokens anyway).
MAX_IMAGES = 16             # Seeds per request.
MAX_FRAMES = 16             # Frames of an interpolation strip.
MAX_STEPS = 250             # DDPM steps per request (DDIM-50 is about 0.5 s an image on 2 CPU cores).
QUEUE_SIZE = 64             # Requests waiting; one more is refused by the queue ("queue is full").
# What the server keeps of past requests, so that its memory stays flat under load: Gradio keeps
# each session's state (every API call is a session) up to this many sessions (its default:
# 10000, about 70 kB each here), and its per-event statistics up to ANALYTICS_EVENTS events.
STATE_SESSIONS = 32
ANALYTICS_EVENTS = 1000
SESSION_QUEUES = 1024       # Sessions whose message queue and event ids the queue keeps (`_bound_queue_memory`).
DISPLAY_SIDE = 256          # Grid images are enlarged (nearest, pixel-exact) to about this side; strip frames to half.
EXAMPLE_PROMPT = "a small red circle on the left on a black background"
MODELS = ("GAN", "DDPM")
VIEW_BUTTONS = ("download", "fullscreen")   # Not 'share', which posts to a hub on the internet.

# System fonts only: Gradio's themes can name web fonts, which an offline machine cannot fetch.
SYSTEM_FONTS = ("system-ui", "ui-sans-serif", "Helvetica", "Arial", "sans-serif")
MONO_FONTS = ("ui-monospace", "Menlo", "Consolas", "monospace")


class DemoError(ValueError):
    """A bad request: its one-line message is what the page shows."""


def check_prompt(prompt: Any, what: str = "prompt") -> str:
    """The prompt as str, stripped; a one-line DemoError when it is not text, not valid UTF-8
    (bytes, or a str with lone surrogates as a JSON "\\udcff" escape gives), empty or too long."""
    if isinstance(prompt, (bytes, bytearray)):
        try:
            prompt = bytes(prompt).decode("utf-8")
        except UnicodeDecodeError:
            raise DemoError(f"{what} is not valid UTF-8 text") from None
    if not isinstance(prompt, str):
        raise DemoError(f"{what} must be text, got {type(prompt).__name__}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise DemoError(f"{what} is not valid UTF-8 text (it holds a lone surrogate)") from None
    prompt = prompt.strip()
    if not prompt:
        raise DemoError(f"{what} is empty: describe a picture, e.g. {EXAMPLE_PROMPT!r}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise DemoError(f"{what} is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}")
    return prompt


def check_int(value: Any, name: str, low: int, high: int) -> int:
    """`value` as an int in [low, high] (an integral float, as a number box sends, is fine)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
            and float(value).is_integer() and low <= value <= high:
        return int(value)
    raise DemoError(f"{name} must be a whole number in [{low}, {high}], got {value!r}")


def check_number(value: Any, name: str) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise DemoError(f"{name} must be a finite number, got {value!r}")


def parse_seeds(text: Any, limit: int = MAX_IMAGES) -> list[int]:
    """'0, 3, 5-8' -> [0, 3, 5, 6, 7, 8]: non-negative seeds and inclusive ranges, separated by
    commas or spaces, at most `limit` of them."""
    if isinstance(text, numbers.Integral) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise DemoError(f"seeds must be text such as '0-7' or '1, 5, 9', got {type(text).__name__}")
    seeds: list[int] = []
    for token in filter(None, re.split(r"[,\s]+", text.strip())):
        m = re.fullmatch(r"(\d{1,18})(?:-(\d{1,18}))?", token)
        if not m:
            raise DemoError(f"seeds: {token[:40]!r} is not a seed or a range; write e.g. '0-7' or '1, 5, 9'")
        first = int(m[1])
        last = first if m[2] is None else int(m[2])
        if last < first or len(seeds) + last - first + 1 > limit:
            raise DemoError(f"seeds: {token!r} is not an ascending range within the limit of {limit} images")
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise DemoError("seeds are empty: give at least one, e.g. '0-7'")
    return seeds


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """a, b: [D]; t: [F, 1] in [0, 1] -> [F, D] on the great circle from a to b (lerp when they
    are parallel), the usual path between two Gaussian latents."""
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.sin().abs() < 1e-6:
        return torch.lerp(a.expand(len(t), -1), b.expand(len(t), -1), t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / omega.sin()


class DemoHandler:
    """The demo's requests, checked and run one at a time: `generate` (a grid over seeds) and
    `interpolate` (a strip between two seeds and/or two prompts, GAN only)."""

    def __init__(self, gan: TextToImage, ddpm: TextToImage | None = None):
        if gan.sampler.kind != "gan":
            raise DemoError(f"--checkpoint must be a GAN checkpoint, this one is of kind {gan.sampler.kind!r} "
                            f"(give a DDPM with --ddpm_checkpoint)")
        if ddpm is not None and ddpm.sampler.kind != "ddpm":
            raise DemoError(f"--ddpm_checkpoint must be a DDPM checkpoint, this one is of kind {ddpm.sampler.kind!r}")
        self.pipes = {"GAN": gan, "DDPM": ddpm}
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="demo-model")

    @classmethod
    def from_checkpoints(cls, checkpoint: str | Path | None = None, ddpm_checkpoint: str | Path | None = None,
                         device: str = "auto") -> DemoHandler:
        ddpm = None if ddpm_checkpoint is None else TextToImage.from_checkpoint(ddpm_checkpoint, device)
        return cls(TextToImage.from_checkpoint(checkpoint, device), ddpm)

    @property
    def has_ddpm(self) -> bool:
        return self.pipes["DDPM"] is not None

    def _run(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on the handler's one model thread: requests sample one at a time,
        and always from the same thread. glibc gives threads their own malloc arenas, so the
        model's buffers spread over a server's thread pool would grow its RSS for long."""
        return self._model_thread.submit(fn, *args, **kwargs).result()

    def _upscale(self, pipe: TextToImage, side: int = DISPLAY_SIDE) -> int:
        return max(1, side // pipe.sampler.resolution)

    def generate(self, prompt: Any, seeds: Any = "0-7", truncation: Any = 1.0, model: Any = "GAN",
                 steps: Any = 25, guidance: Any = 3.0) -> list[tuple[Image.Image, str]]:
        """One (image, 'seed N') per seed, enlarged for viewing; DemoError or ValueError (one
        line) on a bad request."""
        prompt, seed_list = check_prompt(prompt), parse_seeds(seeds)
        if model not in MODELS:
            raise DemoError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
        pipe = self.pipes[model]
        if pipe is None:
            raise DemoError("no DDPM checkpoint loaded: start the server with --ddpm_checkpoint PATH")
        if model == "GAN":
            options = {"truncation": check_number(truncation, "truncation")}
        else:
            options = {"steps": check_int(steps, "steps", 1, MAX_STEPS), "guidance": check_number(guidance, "guidance")}
        out = self._run(pipe, [prompt] * len(seed_list), seeds=seed_list, upscale=self._upscale(pipe), **options)
        return [(img, f"seed {s}") for img, s in zip(out.images, out.seeds)]

    def interpolate(self, prompt: Any, prompt_b: Any = "", seed_a: Any = 0, seed_b: Any = 1, frames: Any = 8,
                    truncation: Any = 1.0) -> Image.Image:
        """A strip of `frames` GAN images: the sentence embedding goes linearly from `prompt` to
        `prompt_b` (empty: the same prompt) and z along the great circle from seed_a's to seed_b's."""
        a = check_prompt(prompt)
        b = a if isinstance(prompt_b, str) and not prompt_b.strip() else check_prompt(prompt_b, "second prompt")
        seed_a, seed_b = (check_int(s, name, 0, 2 ** 63 - 1) for s, name in ((seed_a, "seed A"), (seed_b, "seed B")))
        n = check_int(frames, "frames", 2, MAX_FRAMES)
        psi = check_number(truncation, "truncation")
        self.pipes["GAN"].sampler.options(truncation=psi)          # the sampler's own bounds check
        return self._run(self._strip, a, b, seed_a, seed_b, n, psi)

    def _strip(self, a: str, b: str, seed_a: int, seed_b: int, n: int, psi: float) -> Image.Image:
        pipe = self.pipes["GAN"]
        sampler = pipe.sampler
        t = torch.linspace(0, 1, n, device=sampler.device)[:, None]
        z = seeded_normal([seed_a, seed_b], sampler.G.cfg.z_dim, sampler.device)
        img = sampler.synthesize(sampler.caption_path(a, b, n), slerp(z[0], z[1], t), psi)
        strip = Image.fromarray(make_grid(to_uint8(img), 1, n))
        return upscale_nearest(strip, self._upscale(pipe, DISPLAY_SIDE // 2))


# ----------------------------------------------------------------------------------------------
# The Gradio page.

def import_gradio():
    """gradio, imported with its analytics off (it reads the variable at import) and its
    in-memory event statistics bounded (read when the queue is made); a one-line
    SystemExit with the install command when it is missing."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", str(ANALYTICS_EVENTS))
    try:
        import gradio
    except ImportError:
        raise SystemExit('error: the web demo needs Gradio: pip install -e ".[demo]"') from None
    return gradio


def _ui_errors(fn):
    """`fn` with a bad request turned into gr.Error: a one-line message in the page (and the
    API's error event), no traceback printed."""
    gr = import_gradio()

    def wrapped(*args):
        try:
            return fn(*args)
        except (ValueError, TypeError, CheckpointError) as e:
            raise gr.Error(str(e).splitlines()[0] if str(e) else type(e).__name__, print_exception=False) from None
    wrapped.__name__ = fn.__name__
    return wrapped


def build_app(handler: DemoHandler):
    """The gr.Blocks page over `handler`; events share one queue slot (`concurrency_id`
    'model', limit 1), so requests are processed one at a time in arrival order."""
    gr = import_gradio()
    ddpm = handler.has_ddpm
    with gr.Blocks(title="stylegan_t2i demo", analytics_enabled=False, delete_cache=(600, 1800)) as app:
        gr.Markdown("## stylegan_t2i: text to image\nDescribe a picture (shape, colour, size, position, "
                    "background), pick seeds, and generate.")
        prompt = gr.Textbox(label="Prompt", value=EXAMPLE_PROMPT, lines=2, elem_id="prompt")
        with gr.Row():
            seeds = gr.Textbox(label="Seeds", value="0-7", elem_id="seeds",
                               info=f"e.g. '0-7' or '1, 5, 9'; at most {MAX_IMAGES}")
            truncation = gr.Slider(0, 1.5, value=1.0, step=0.05, label="Truncation ψ (GAN; 1 = off)")
        with gr.Row():
            model = gr.Radio(list(MODELS), value="GAN", label="Model", interactive=ddpm,
                             info=None if ddpm else "DDPM: start the server with --ddpm_checkpoint")
            steps = gr.Slider(1, MAX_STEPS, value=25, step=1, label="DDPM steps", interactive=False)
            guidance = gr.Slider(0, 10, value=3.0, step=0.1, label="DDPM guidance", interactive=False)
        run = gr.Button("Generate", variant="primary", elem_id="generate")
        gallery = gr.Gallery(label="Results", columns=8, height=340, format="png", object_fit="contain",
                             buttons=list(VIEW_BUTTONS), elem_id="results", interactive=False)
        with gr.Accordion("Interpolation strip (GAN)", open=True):
            with gr.Row():
                prompt_b = gr.Textbox(label="Second prompt (empty: the prompt above)", value="", elem_id="prompt_b")
                seed_a = gr.Number(label="Seed A", value=0, precision=0, minimum=0)
                seed_b = gr.Number(label="Seed B", value=1, precision=0, minimum=0)
                frames = gr.Slider(2, MAX_FRAMES, value=8, step=1, label="Frames")
            run_strip = gr.Button("Interpolate", elem_id="interpolate")
            strip = gr.Image(label="Interpolation", type="pil", format="png", interactive=False,
                             buttons=list(VIEW_BUTTONS), elem_id="strip")

        def switch(choice):
            on = choice == "DDPM"
            return gr.update(interactive=on), gr.update(interactive=on), gr.update(interactive=not on)
        model.change(switch, model, [steps, guidance, truncation], queue=False, api_name=False)
        inputs = [prompt, seeds, truncation, model, steps, guidance]
        for event, api_name in ((run.click, "generate"), (prompt.submit, False)):
            event(_ui_errors(handler.generate), inputs, gallery, api_name=api_name,
                  concurrency_limit=1, concurrency_id="model")
        run_strip.click(_ui_errors(handler.interpolate), [prompt, prompt_b, seed_a, seed_b, frames, truncation],
                        strip, api_name="interpolate", concurrency_limit=1, concurrency_id="model")
    return _bound_queue_memory(app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1))


def _bound_queue_memory(app):
    """Gradio 6.31's queue keeps, for every session (so for every API call), a message queue in
    an LRU of 2000 sessions and a set of event ids that it empties but never drops (about 2 kB
    a session in all): keep both for the last SESSION_QUEUES sessions only, so that memory stays
    flat under load (benchmarks/bench_web_demo.py). A Gradio without these attributes is left as is."""
    from gradio.utils import LRUCache
    queue = getattr(app, "_queue", None)
    messages = getattr(queue, "pending_messages_per_session", None)
    if isinstance(messages, LRUCache):
        messages.max_size = SESSION_QUEUES
    event_ids = getattr(queue, "pending_event_ids_session", None)
    if type(event_ids) is dict:
        bounded = LRUCache(SESSION_QUEUES)
        bounded.update(event_ids)
        queue.pending_event_ids_session = bounded
    return app


class Utf8JsonBodies:
    """ASGI middleware: a JSON request body that is not UTF-8, or is over MAX_BODY bytes, gets a
    400 or 413 with a one-line reason (Gradio's own answer to the first is 'There was an error
    parsing the body'); other requests pass unchanged."""

    MAX_BODY = 1 << 20      # Far above a request's prompt (MAX_PROMPT_CHARS) and options.

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" \
                or b"json" not in dict(scope["headers"]).get(b"content-type", b""):
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":      # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.MAX_BODY:
                return await self._refuse(send, 413, f"request body over {self.MAX_BODY} bytes")
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return await self._refuse(send, 400, "request body is not valid UTF-8: prompts must be UTF-8 text")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send, status: int, reason: str) -> None:
        payload = json.dumps({"detail": reason}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def launch(app, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve `app` on host:port (no share link, no server-side rendering, system fonts);
    block=False returns at once (tests). Returns (FastAPI app, local URL, share URL: None)."""
    gr = import_gradio()
    from starlette.middleware import Middleware  # a dependency of gradio's FastAPI
    theme = gr.themes.Base(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    return app.launch(server_name=host, server_port=port, share=False, theme=theme, ssr_mode=False,
                      pwa=False, mcp_server=False, inbrowser=False, show_error=False, quiet=not block,
                      footer_links=["api"], run_history=False, state_session_capacity=STATE_SESSIONS,
                      prevent_thread_lock=not block,
                      app_kwargs={"middleware": [Middleware(Utf8JsonBodies)]})


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def spawn_server(args: Sequence[str] = (), env: dict | None = None,
                 timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """`stylegan-t2i-serve ARGS` in a subprocess on a free loopback port (tests, benchmarks):
    (the process, its URL) once the page is served. Its output goes to a pipe; a RuntimeError
    with that output's end when it exits first, a TimeoutError after `timeout` seconds."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, "-m", "stylegan_t2i.web_demo", "--port", str(port), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {proc.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise TimeoutError(f"{url} not served within {timeout:g} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def port_number(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in [1, 65535], got {port}")
    return port


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="stylegan-t2i-serve",
        description="Serve the local web demo (Gradio): a prompt box, seeds, truncation, a GAN/DDPM switch, "
                    "an image grid and an interpolation strip. Needs the [demo] extra: "
                    'pip install -e ".[demo]". Requests are queued and run one at a time.')
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help=f"GAN checkpoint or save_pretrained directory (default: the shipped demo model, {DEMO_MODEL})")
    p.add_argument("--ddpm_checkpoint", default=None, metavar="PATH",
                   help="optional DDPM checkpoint: enables the DDPM switch with its steps and guidance "
                        "(default: none, GAN only)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 exposes the "
                        "demo to the network)")
    p.add_argument("--port", type=port_number, default=7860, help="TCP port (default: 7860)")
    p.add_argument("--device", default="auto",
                   help="'auto' (CUDA when there is one), 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import_gradio()
    try:
        handler = DemoHandler.from_checkpoints(args.checkpoint, args.ddpm_checkpoint, args.device)
    except (CheckpointError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"serving on http://{args.host}:{args.port} (Ctrl+C stops)", flush=True)
    try:
        launch(build_app(handler), args.host, args.port)
    except OSError as e:
        raise SystemExit(f"error: cannot serve on {args.host}:{args.port}: {str(e).splitlines()[0]}") from None


if __name__ == "__main__":
    main()
