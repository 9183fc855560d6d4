"""`genreflow serve` under a bounded load on loopback, against `genreflow predict`.

    PYTHONPATH=src .venv/bin/python bench/bench_serve.py \\
        --clips ../shared/data/ood-clips --train ../shared/data/gtzan-excerpts \\
        --requests 200 --concurrency 1,4,16 --workers 2 --cli-runs 5

Trains the default model on --train (or uses the latest of --store), publishes it to a
local store in a temporary folder, starts `genreflow serve` on 127.0.0.1, then for each
concurrency sends --requests POST /predict of the real clips (raw bodies, cycled) from
that many concurrent clients: latency p50/p95, throughput, errors, and the peak RSS of
the server with its feature workers (sum of VmRSS, sampled every 0.1 s). Then runs
`genreflow predict` on --cli-runs clips, one process each after a first warm-up call
(wall time of each), and checks that both give the same genre and probabilities.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

SRC = Path(__file__).resolve().parents[1] / "src"
GENREFLOW = [sys.executable, "-m", "genreflow.cli"]


def train_and_publish(folder: Path, store_uri: str) -> str:
    """The default model, trained on every feature set, published with the sets it reads
    (what `genreflow predict` and the server then compute)."""
    from genreflow import registry
    from genreflow.dataset import build_table, labelled_audio
    from genreflow.features.sets import SETS, manifest_entries
    from genreflow.model import fit_model, needed_sets
    from genreflow.storage import open_store

    table, failures = build_table(labelled_audio(folder), workers=1, sets=tuple(SETS))
    model = fit_model(table)
    sets = needed_sets(model)
    version = registry.new_version()
    registry.publish(open_store(store_uri), version,
                     {registry.MODEL_FILE: registry.dump_model(model)},
                     {"metrics": {}, "n_training_segments": len(table),
                      **manifest_entries(sets)},
                     promote=True)
    print(f"trained on {table['track_id'].nunique()} clips ({len(table)} segments, "
          f"{len(failures)} failed), feature sets {sets} -> {version}", flush=True)
    return version


class RssSampler(threading.Thread):
    """Peak of the summed RSS of a process and its children."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process, self.peak, self.running = psutil.Process(pid), 0, True

    def run(self):
        while self.running:
            try:
                procs = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def load(url: str, bodies: list[tuple[str, bytes]], requests: int,
               concurrency: int) -> dict:
    latencies, errors, answers = [], [], {}
    queue = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        async def worker():
            for i in queue:
                name, body = bodies[i % len(bodies)]
                started = time.perf_counter()
                try:
                    answer = await client.post(f"{url}/predict", content=body,
                                               params={"name": name})
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    errors.append(f"{answer.status_code} {answer.text[:200]}")
                else:
                    answers[name] = answer.json()

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "wall": wall, "answers": answers}


def start_server(store_uri: str, port: int, workers: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen(
        [*GENREFLOW, "serve", "--store", store_uri, "--port", str(port), "--workers",
         str(workers), "--pending", "16"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, required=True, help="<genre>/<file> audio")
    parser.add_argument("--train", type=Path, help="train the default model on this folder")
    parser.add_argument("--store", help="use latest of this store instead of --train")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args()
    if not (args.train or args.store):
        parser.error("--train FOLDER or --store URI")

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    env = {**os.environ, "PYTHONPATH": str(SRC), "GENREFLOW_CACHE": str(tmp / "cache")}
    store_uri = args.store or str(tmp / "store")
    if not args.store:
        train_and_publish(args.train, store_uri)
    clips = sorted(p for p in args.clips.glob("*/*") if p.is_file())
    bodies = [(p.name, p.read_bytes()) for p in clips]
    print(f"{len(clips)} clips from {args.clips}; {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)

    started = time.perf_counter()
    server = start_server(store_uri, args.port, args.workers, env)
    print(f"server up in {time.perf_counter() - started:.1f} s (pid {server.pid})", flush=True)
    url = f"http://127.0.0.1:{args.port}"
    rows, answers = [], {}
    try:
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            sampler = RssSampler(server.pid)
            sampler.start()
            result = asyncio.run(load(url, bodies, args.requests, concurrency))
            sampler.running = False
            sampler.join()
            answers.update(result["answers"])
            lat = result["latencies"]
            rows.append((concurrency, len(lat), len(result["errors"]),
                         statistics.median(lat), percentile(lat, 0.95), max(lat),
                         len(lat) / result["wall"], sampler.peak / 1e6))
            print(f"c={concurrency}: p50 {rows[-1][3]:.3f} s, p95 {rows[-1][4]:.3f} s, "
                  f"{rows[-1][6]:.2f} req/s, {len(result['errors'])} errors, peak RSS "
                  f"{rows[-1][7]:.0f} MB {result['errors'][:3]}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)

    cli, same = [], 0
    subprocess.run([*GENREFLOW, "predict", "--store", store_uri, str(clips[0])], env=env,
                   capture_output=True, check=True)  # first call: fills the model cache
    for clip in clips[: args.cli_runs]:
        started = time.perf_counter()
        done = subprocess.run([*GENREFLOW, "predict", "--store", store_uri, "--json",
                               str(clip)], env=env, capture_output=True, text=True, check=True)
        cli.append(time.perf_counter() - started)
        row = json.loads(done.stdout)[0]
        served = answers.get(clip.name, {})
        same += (row["genre"], row["probabilities"]) == (served.get("genre"),
                                                         served.get("probabilities"))

    print("\n| concurrency | requests ok | errors | p50 s | p95 s | max s | req/s | "
          "peak RSS MB (server + workers) |\n|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| {} | {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.2f} | {:.0f} |".format(*row))
    print(f"\n`genreflow predict` (one process per clip, warm cache), {len(cli)} clips: "
          f"p50 {statistics.median(cli):.2f} s, max {max(cli):.2f} s; same genre and "
          f"probabilities as the server for {same}/{len(cli)}")


if __name__ == "__main__":
    main()
