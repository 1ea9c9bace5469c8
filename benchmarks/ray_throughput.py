"""Ray Data throughput: rows/s of `ChatMapper` per actor, by calls in flight (printed only).

Runs ``ray.data.range(n)`` through ``map_batches(ChatMapper)`` on a 2-CPU local cluster
against a local OpenAI server that waits ``--chunk-delay`` seconds between events, so a call
takes a fixed time on the wire and throughput shows how many calls an actor keeps in flight.
The same rows through ``amap`` in this process, with no Ray, are the reference. Run it with
``nox -s ray -- bench`` or ``python -m benchmarks.ray_throughput [--quick]``; it asserts
nothing. The server runs on a thread of this process, so on a small machine it shares the
CPUs with the actors: the figures are a floor.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import anyio
import ray

from chatstream.providers.openai import ChatOpenAI
from chatstream.ray import ChatMapper
from chatstream.testing import Faults, OpenAIServer, ScriptedReply, serve_in_thread

REPLY = ScriptedReply.from_text("The purpose of regularization is to generalize")
"""Eight text pieces: with the role, finish, usage and [DONE] events, twelve chunk delays."""


def run_ray(server: OpenAIServer, rows: int, actors: int, concurrency: int) -> tuple[float, float]:
    """Rows/s over the whole job, and from the first request on (without the start-up)."""
    model = ChatOpenAI(base_url=server.base_url, api_key="bench", max_retries=0)
    batch = max(concurrency, 8)
    dataset = ray.data.range(rows).map_batches(_prompts, batch_format="pyarrow")
    answers = dataset.repartition(target_num_rows_per_block=batch).map_batches(
        ChatMapper,
        fn_constructor_kwargs={"model": model, "max_concurrency": concurrency},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0.25,
        batch_size=batch,
        batch_format="pyarrow",
    )
    before = len(server.requests)
    first: list[float] = []

    def watch() -> None:  # the server keeps no timestamps: note when its first request came
        while not first and not done.is_set():
            if len(server.requests) > before:
                first.append(time.perf_counter())
            time.sleep(0.005)

    done = threading.Event()
    watcher = threading.Thread(target=watch, daemon=True)
    start = time.perf_counter()
    watcher.start()
    table = answers.materialize()
    end = time.perf_counter()
    done.set()
    watcher.join()
    errors = sum(1 for row in table.iter_rows() if row["error"] is not None)
    assert table.count() == rows, table.count()
    assert errors == 0, f"{errors} failed calls"
    return rows / (end - start), rows / (end - first[0])


def _prompts(batch: Any) -> Any:
    import pyarrow as pa

    ids = batch.column("id")
    return pa.table({"id": ids, "prompt": [f"question {i}" for i in ids.to_pylist()]})


def run_amap(model: ChatOpenAI, rows: int, concurrency: int) -> float:
    async def main() -> float:
        start = time.perf_counter()
        prompts = [f"question {i}" for i in range(rows)]
        async with model.amap(prompts, max_concurrency=concurrency) as results:
            async for row in results:
                assert row.ok, row.error
        await model.aclose()
        return rows / (time.perf_counter() - start)

    return anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rows (about a minute)")
    parser.add_argument("--chunk-delay", type=float, default=0.01)
    args = parser.parse_args()
    scale = 1 if args.quick else 3
    # (actors, calls in flight per actor, rows): enough rows for ~5 s of calls after start-up.
    cases = [(1, 1, 40 * scale), (1, 8, 200 * scale), (1, 32, 600 * scale), (2, 32, 800 * scale)]
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with serve_in_thread(OpenAIServer([REPLY], Faults(chunk_delay=args.chunk_delay))) as server:
        print(f"chunk delay {args.chunk_delay * 1000:.0f} ms, 12 delays per call")
        print(
            "| actors | in flight per actor | rows | Ray rows/s (whole job) "
            "| Ray rows/s (after start-up) | amap rows/s, no Ray |"
        )
        print("|---|---|---|---|---|---|")
        for actors, concurrency, rows in cases:
            whole, steady = run_ray(server, rows, actors, concurrency)
            model = ChatOpenAI(base_url=server.base_url, api_key="bench", max_retries=0)
            reference = run_amap(model, rows, actors * concurrency)
            print(
                f"| {actors} | {concurrency} | {rows} | {whole:.1f} | {steady:.1f} "
                f"| {reference:.1f} |"
            )
    ray.shutdown()


if __name__ == "__main__":
    main()
