"""Data-parallel training over several worker processes (`tf.distribute.MultiWorkerMirroredStrategy`).

Every worker holds a whole copy of the model and runs the training step of `trainer.Trainer` on
its own shard of the records (`Replication.dataset`): a global batch of B is B / N records on each
of N workers, the gradients (the embedding tables' as `tf.IndexedSlices`, all-gathered) are summed
across workers by Keras's optimizer before one identical update on every copy. Each worker then
scores the whole validation set on its (identical) weights, so all of them stop at the same epoch;
only worker 0, the chief, writes the model directory (from a plain, undistributed copy of the
weights: the SavedModel is the same as a one-process run's).

Why MultiWorkerMirroredStrategy and not ParameterServerStrategy: the tables (10^6 articles x 64
floats, 256 MB) fit every worker's memory, and parameter servers would change the training loop:
its steps are scheduled by a coordinator process (`ClusterCoordinator.schedule`), updates are
asynchronous (a step reads weights other steps are changing, so a run is no longer one seed's
function of the data) and the records are read through per-worker dataset functions the
coordinator builds. The mirrored strategy runs the same `tf.function` step, synchronously.

Records are sharded by record, not by file (`tf.data.Dataset.shard` on the record stream, before
the cache): the transform writes few files of unequal sizes (one for small data), so file shards
would leave a worker idle or give workers shares far from 1/N; record shards differ by at most one
record. Each worker still decompresses every file once (to fill its cache) and keeps only its 1/N.

The cluster comes from TF_CONFIG (`{"cluster": {"worker": [host:port, ...]}, "task": {"type":
"worker", "index": i}}`), as TensorFlow reads it; `tf_config` builds one. `train_on_local_workers`
starts N processes on 127.0.0.1 (a machine's cores as workers; the tests, the benchmark and the
Kubeflow component's local mode); on Kubernetes each pod is one worker (deploy/training/).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

TF_CONFIG_ENV = "TF_CONFIG"
WORKER = "worker"
LOG_TAIL_LINES = 30  # of a failed worker's log, in the error
POLL_SECONDS = 0.5
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def tf_config(addresses: Sequence[str], index: int) -> dict[str, Any]:
    """TF_CONFIG (as a dict; `json.dumps` it) of worker `index` of a cluster of `addresses`.

    Raises:
      ValueError: no addresses, one that is not `host:port` with a port in 1..65535, the same
        address twice, or `index` outside `[0, len(addresses))`.
    """
    addresses = list(addresses)
    if not addresses:
        raise ValueError("a cluster needs at least one worker address (host:port)")
    for position, address in enumerate(addresses):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"worker address {position} {address!r} is not host:port (port 1..65535)")
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        raise ValueError(f"worker addresses {duplicates} appear more than once: each worker needs its own")
    if not 0 <= index < len(addresses):
        raise ValueError(
            f"worker index {index} is outside the cluster of {len(addresses)} workers (0..{len(addresses) - 1})"
        )
    return {"cluster": {WORKER: addresses}, "task": {"type": WORKER, "index": index}}


def parse_tf_config(text: str) -> tuple[list[str], int]:
    """`(worker addresses, this worker's index)` of a TF_CONFIG value.

    Raises:
      ValueError: not JSON, not a workers-only cluster (chief, ps or evaluator tasks: this trainer
        runs the mirrored strategy, whose chief is worker 0), or addresses/index as `tf_config` refuses.
    """
    try:
        value = json.loads(text)
        cluster = value["cluster"]
        task = value["task"]
        addresses = cluster[WORKER]
        kind, index = task["type"], int(task["index"])
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"{TF_CONFIG_ENV} is not a cluster of workers with this task's type and index "
            f'({{"cluster": {{"worker": ["host:port", ...]}}, "task": {{"type": "worker", "index": 0}}}}): {error!r}'
        ) from error
    others = sorted(set(cluster) - {WORKER})
    if others or kind != WORKER:
        raise ValueError(
            f"{TF_CONFIG_ENV} has task types {others or [kind]}: data-parallel training takes workers only "
            "(worker 0 is the chief)"
        )
    tf_config(addresses, index)  # checks them
    return list(addresses), index


def free_local_addresses(count: int) -> list[str]:
    """`count` distinct `127.0.0.1:port` addresses whose ports were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass(frozen=True)
class Replication:
    """Where this process's training runs: alone (`strategy` None) or as one worker of several.

    Attributes:
      strategy: the `tf.distribute.MultiWorkerMirroredStrategy`, or None in a one-process run.
      num_workers: workers in the cluster (1 alone).
      worker_index: this worker's index; 0 is the chief, the one that writes the model directory.
    """

    strategy: Any = None
    num_workers: int = 1
    worker_index: int = 0

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    def scope(self) -> contextlib.AbstractContextManager:
        """Where variables (model, optimizer, sampler) must be created to be mirrored."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def per_worker_batch(self, global_batch: int) -> int:
        """`global_batch / num_workers` records per worker and step.

        Raises:
          ValueError: the global batch does not split evenly (the step's loss would weigh the
            workers' records unequally).
        """
        if global_batch % self.num_workers:
            raise ValueError(
                f"batch_size {global_batch} does not split evenly over {self.num_workers} workers; "
                f"use a multiple of {self.num_workers}"
            )
        return global_batch // self.num_workers

    def barrier(self) -> None:
        """Returns once every worker has called it (at once alone). The workers end together: one
        that exits while the chief still writes the model reads to the others as a crashed peer."""
        if self.strategy is None:
            return
        import tensorflow as tf

        ones = self.strategy.run(lambda: tf.constant(1.0))
        self.strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)

    def dataset(self, make: Callable[[int, int, int], Any], global_batch: int) -> Any:
        """Each worker's batches: `make(num_shards, shard_index, per_worker_batch)` -> tf.data.Dataset,
        distributed over the strategy's replicas (each worker runs `make` for its own shard)."""
        if self.strategy is None:
            return make(1, 0, global_batch)
        import tensorflow as tf

        per_worker = self.per_worker_batch(global_batch)

        def worker_dataset(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return make(context.num_input_pipelines, context.input_pipeline_id, per_worker)

        return self.strategy.distribute_datasets_from_function(worker_dataset)


SINGLE_PROCESS = Replication()


def replication_from_tf_config(text: str | None = None) -> Replication:
    """The worker this process is, from TF_CONFIG (the environment's when `text` is None).

    Creates the strategy, so call it before any other TensorFlow op in the process (TensorFlow
    configures the process's collective ops then). A one-worker cluster is `SINGLE_PROCESS`.

    Raises:
      ValueError: TF_CONFIG is unset or malformed (see `parse_tf_config`).
    """
    text = os.environ.get(TF_CONFIG_ENV) if text is None else text
    if not text:
        raise ValueError(f"{TF_CONFIG_ENV} is not set: a worker needs the cluster's addresses and its index")
    addresses, index = parse_tf_config(text)
    if len(addresses) == 1:
        return SINGLE_PROCESS
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({WORKER: addresses}), task_type=WORKER, task_id=index, rpc_layer="grpc"
    )
    # RING: the CPU collectives (NCCL is GPU-only). No collective timeout: a step may wait for a
    # slower worker's validation pass; a dead peer is caught by whoever runs the workers (the local
    # launcher stops the rest, the Kubernetes Job fails and its deadline ends it).
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    return Replication(strategy, len(addresses), index)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(log unreadable: {error})"


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def train_on_local_workers(
    transform_dir: str | os.PathLike,
    output_root: str | os.PathLike,
    config: Any,
    num_workers: int,
    model_version: str | None = None,
    log_dir: str | os.PathLike | None = None,
) -> Any:
    """Trains with `num_workers` worker processes on this machine (127.0.0.1) and returns the
    chief's `train.TrainResult`, read back from the model directory it wrote.

    Each worker's output goes to `log_dir/worker-<i>.log` (a temporary directory, removed after
    a success, when None). When a worker fails, the others are stopped (they would wait for it at
    the next step) and the error quotes the failed worker's log.

    Raises:
      ValueError: `num_workers` < 1, or the batch does not split evenly over the workers.
      FileExistsError: OUT/<model_version> exists already.
      RuntimeError: a worker exited with an error.
    """
    from homefeed import config as config_lib
    from trainer.training import export as export_lib
    from trainer.training.train import TrainResult

    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    Replication(None, num_workers).per_worker_batch(config.batch_size)  # refuse before starting anyone
    root = Path(output_root)
    version = model_version or export_lib.default_version(root)
    export_lib.check_new_version(root, version)
    owned_logs = log_dir is None
    logs = Path(tempfile.mkdtemp(prefix="train-workers-")) if log_dir is None else Path(log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    addresses = free_local_addresses(num_workers)
    arguments = [
        "--transformed",
        os.fspath(transform_dir),
        "--out",
        os.fspath(root),
        "--version",
        version,
        "--config",
        json.dumps(config_lib.to_dict(config)),
    ]
    LOG.info("training with %d local workers at %s; their logs under %s", num_workers, ", ".join(addresses), logs)
    # The workers import this project as this process does (a checkout, not only an installed package).
    python_path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    processes: list[subprocess.Popen] = []
    log_files = [logs / f"worker-{i}.log" for i in range(num_workers)]
    try:
        for index, log_path in enumerate(log_files):
            env = {**os.environ, TF_CONFIG_ENV: json.dumps(tf_config(addresses, index)), "PYTHONPATH": python_path}
            with log_path.open("wb") as log_file:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", __name__, *arguments],
                        env=env,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
        _wait_all(processes, log_files)
    finally:
        _stop(processes)
    model_dir = root / version
    manifest = json.loads((model_dir / "manifest.json").read_text())
    metrics = json.loads((model_dir / "metrics.json").read_text())
    if owned_logs:
        for path in log_files:
            path.unlink(missing_ok=True)
        logs.rmdir()
    return TrainResult(model_dir, manifest["model_version"], manifest, metrics)


def _wait_all(processes: Sequence[subprocess.Popen], log_files: Sequence[Path]) -> None:
    """Returns once every worker has exited 0; raises at the first that does not."""
    while True:
        codes = [process.poll() for process in processes]
        failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            index = failed[0]
            raise RuntimeError(
                f"training worker {index} of {len(processes)} exited with status {codes[index]}; "
                f"the others were stopped. The end of {log_files[index]}:\n{_tail(log_files[index])}"
            )
        if all(code == 0 for code in codes):
            return
        time.sleep(POLL_SECONDS)


def main(argv: Sequence[str] | None = None) -> int:
    """One worker: TF_CONFIG from the environment, the config as JSON (see `train_on_local_workers`)."""
    parser = argparse.ArgumentParser(description="one data-parallel training worker (TF_CONFIG from the environment)")
    parser.add_argument("--transformed", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--config", required=True, help="TrainConfig fields as a JSON object")
    args = parser.parse_args(argv)
    replication = replication_from_tf_config()  # first: before any other TensorFlow op
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s worker {replication.worker_index} %(levelname)s %(name)s: %(message)s"
    )
    from trainer.training.id_dropout_choice import train_config
    from trainer.training.train import train_model

    config = train_config(json.loads(args.config))
    train_model(args.transformed, args.out, config, model_version=args.version, replication=replication)
    return 0


if __name__ == "__main__":
    sys.exit(main())
