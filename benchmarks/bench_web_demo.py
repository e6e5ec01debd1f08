"""The web demo under load (issue 17 item 4): `stylegan-t2i-serve` in a subprocess on a free
loopback port, --requests requests from --clients concurrent clients through Gradio's HTTP API
(POST /gradio_api/call/generate, then its event stream), then one markdown table.

The requests cycle through ten kinds: six valid (a demo caption, 4 seeds, a truncation), one
empty prompt, one 10 kB prompt, one non-UTF-8 prompt sent as raw bytes (an invalid JSON body)
and one sent as a lone surrogate ("\\udcff", valid JSON that decodes to a str that is not
UTF-8). Only the invalid ones may fail, each with its one-line message; the table says how
many requests of each kind succeeded or failed, the messages, and latency p50/p99 (POST to the
final event; the server runs one request at a time, so a request's latency includes its wait
in the queue). RSS is the server process's VmRSS after the first request and every 200 requests
of a --warmup of the same mix (Gradio keeps per-session state, message queues and event
statistics in caches that web_demo.py bounds, STATE_SESSIONS, SESSION_QUEUES and
ANALYTICS_EVENTS; they fill up first), then at the start, halfway and end of the measured
requests, with the peak of samples taken every 0.5 s. Every request goes to 127.0.0.1 only; the
run is bounded by --requests and each request's --timeout.

    python benchmarks/bench_web_demo.py [--requests 200] [--clients 8] [--warmup 1200] [--timeout 120] [--device cpu]

(after `pip install -e ".[demo]"`)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import torch

from stylegan_t2i.measure import machine_description
from stylegan_t2i.web_demo import MAX_PROMPT_CHARS, spawn_server, stop_server

CAPTIONS = ["a small red circle on the left on a black background", "a large blue square in the center",
            "a large green triangle on the right on a white background", "a small yellow square at the top"]
KINDS = ["valid"] * 6 + ["empty", "10 kB", "non-UTF-8 bytes", "lone surrogate"]
WARMUP_CHUNK = 200      # warm-up requests between two RSS readings
EXPECTED = {"empty": "prompt is empty", "10 kB": f"limit is {MAX_PROMPT_CHARS}",
            "non-UTF-8 bytes": "not valid UTF-8", "lone surrogate": "not valid UTF-8"}


@dataclass
class Outcome:
    kind:       str
    ok:         bool            # the images came back
    message:    str             # the error's message ('' when ok)
    seconds:    float


def request_body(i: int) -> tuple[str, bytes]:
    kind = KINDS[i % len(KINDS)]
    prompt = {"valid": CAPTIONS[i % len(CAPTIONS)], "empty": "", "10 kB": "a red circle " * 800,
              "lone surrogate": "a red \udcff circle"}.get(kind, "PROMPT")
    data = [prompt, f"{i}-{i + 3}", 1.0 - 0.1 * (i % 4), "GAN", 25, 3.0]
    body = json.dumps({"data": data}).encode()          # ASCII: the surrogate is a "\udcff" escape
    if kind == "non-UTF-8 bytes":
        body = body.replace(b'"PROMPT"', b'"a red \xff\xfe circle"')
    return kind, body


def call(client: httpx.Client, base: str, i: int, timeout: float) -> Outcome:
    kind, body = request_body(i)
    start = time.perf_counter()
    r = client.post(f"{base}gradio_api/call/generate", content=body, headers={"content-type": "application/json"},
                    timeout=timeout)
    if r.status_code != 200:
        return Outcome(kind, False, f"HTTP {r.status_code}: {r.json().get('detail', r.text)}", time.perf_counter() - start)
    event_id = r.json()["event_id"]
    event, data = None, None
    with client.stream("GET", f"{base}gradio_api/call/generate/{event_id}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event in ("complete", "error"):
                data = json.loads(line[6:])
                break
    seconds = time.perf_counter() - start
    if event == "complete":
        return Outcome(kind, len(data[0]) == 4, "" if len(data[0]) == 4 else f"{len(data[0])} images", seconds)
    message = data.get("error") if isinstance(data, dict) else data
    return Outcome(kind, False, str(message), seconds)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def percentile_ms(seconds: list[float], q: float) -> float:
    values = sorted(seconds)
    return 1000 * values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--warmup", type=int, default=1200, help="requests before the measured ones (the same mix)")
    p.add_argument("--timeout", type=float, default=120, help="seconds per request")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GRADIO_TEMP_DIR": tmp}
        server, base = spawn_server(["--device", args.device], env=env, timeout=600)
        clients = [httpx.Client() for _ in range(args.clients)]

        def run(indices: range) -> list[Outcome]:
            with ThreadPoolExecutor(args.clients) as pool:
                return list(pool.map(lambda i: call(clients[i % args.clients], base, i, args.timeout), indices))
        try:
            first = call(clients[0], base, 0, args.timeout)
            curve = [(1, rss_mib(server.pid))]
            for k in range(1, args.warmup, WARMUP_CHUNK):      # warm-up: Gradio's bounded caches fill up
                warm = run(range(k, min(k + WARMUP_CHUNK, args.warmup)))
                wrong = [o for o in [first, *warm] if o.ok != (o.kind == "valid")]
                assert not wrong, wrong
                curve.append((min(k + WARMUP_CHUNK, args.warmup), rss_mib(server.pid)))
            rss_start, samples, done = rss_mib(server.pid), [], threading.Event()

            def sample():
                while not done.wait(0.5):
                    samples.append(rss_mib(server.pid))
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            start = time.perf_counter()
            outcomes = run(range(args.warmup, args.warmup + args.requests))
            wall = time.perf_counter() - start
            done.set()
            sampler.join()
            rss_end = rss_mib(server.pid)
        finally:
            stop_server(server)
            for c in clients:
                c.close()

    threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
    print(f"{datetime.date.today()}, {machine_description(torch.device(args.device)).split(';')[0]}; server on "
          f"{args.device}, OMP_NUM_THREADS={threads}; {args.requests} requests, {args.clients} concurrent clients, "
          f"wall {wall:.1f} s\n")
    print("| requests | n | succeeded | failed | p50 ms | p99 ms | failure message |")
    print("|---|--:|--:|--:|--:|--:|---|")
    unexpected = 0
    for kind in dict.fromkeys(KINDS):
        rows = [o for o in outcomes if o.kind == kind]
        ok = sum(o.ok for o in rows)
        messages = sorted({o.message for o in rows if not o.ok})
        want = EXPECTED.get(kind)
        unexpected += (len(rows) - ok) if want is None else ok + sum(want not in o.message or "\n" in o.message
                                                                      for o in rows if not o.ok)
        print(f"| {kind} | {len(rows)} | {ok} | {len(rows) - ok} | {percentile_ms([o.seconds for o in rows], 0.5):.0f} "
              f"| {percentile_ms([o.seconds for o in rows], 0.99):.0f} | {'; '.join(messages) or '-'} |")
    failed = sum(not o.ok for o in outcomes)
    seconds = [o.seconds for o in outcomes]
    print(f"| all | {len(outcomes)} | {len(outcomes) - failed} | {failed} | {percentile_ms(seconds, 0.5):.0f} "
          f"| {percentile_ms(seconds, 0.99):.0f} | unexpected outcomes: {unexpected} |")
    half = samples[len(samples) // 2] if samples else rss_end
    print(f"\nServer RSS during the warm-up (requests: MiB): {', '.join(f'{n}: {r:.1f}' for n, r in curve)}")
    print(f"Server RSS over the {len(outcomes)} measured requests: {rss_start:.1f} MiB at the start, {half:.1f} MiB halfway, "
          f"{rss_end:.1f} MiB at the end ({rss_end - rss_start:+.1f} MiB), peak {max(samples + [rss_end]):.1f} MiB; "
          f"throughput {len(outcomes) / wall:.1f} requests/s (median of valid: "
          f"{statistics.median(o.seconds for o in outcomes if o.kind == 'valid') * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
