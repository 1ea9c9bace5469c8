"""The parquet-to-parquet job the Ray tests run, in the test process or as a driver to kill.

``python -m tests.ray._job ADDRESS INPUT OUTPUT BASE_URL`` runs it as a driver of its own
attached to the test's cluster, so the test can crash it with SIGKILL.
"""

from __future__ import annotations

import sys

import ray

from chatstream.providers.openai import ChatOpenAI
from chatstream.ray import ChatMapper, read_pending

BATCH_ROWS = 10


def run_job(input_path: str, output_path: str, base_url: str, *, actors: int = 2) -> None:
    model = ChatOpenAI(base_url=base_url, api_key="test", max_retries=0)
    pending = read_pending(input_path, output_path, id_column="id")
    # One block per batch, so each batch's answers become one file as soon as they are done.
    pending = pending.repartition(target_num_rows_per_block=BATCH_ROWS)
    answers = pending.map_batches(
        ChatMapper,
        fn_constructor_kwargs={"model": model, "max_concurrency": 4},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0.25,
        batch_size=BATCH_ROWS,
        batch_format="pyarrow",
    )
    answers.write_parquet(output_path)


if __name__ == "__main__":
    address, input_path, output_path, base_url = sys.argv[1:5]
    ray.init(
        address=address, _node_ip_address="127.0.0.1", configure_logging=False, log_to_driver=False
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    run_job(input_path, output_path, base_url)
