"""The epoch loop of `train.train_model`: steps, progress lines, per-epoch validation recall,
early stopping, and the process-level care a long loop needs (the GC, the input iterator).

`fit` drives a `train.Trainer` (its `config`, `step`, `eval_recall`, `snapshot`, `restore`) over
repeated batches (`data.training_dataset(..., repeat=True)`).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import time
from typing import Any

import numpy as np
import tensorflow as tf

from trainer.model import two_tower as model_lib
from trainer.training.trainer import Trainer
from trainer.training.validation_set import EvalSet, ReplayValidation

LOG = logging.getLogger(__name__)

PROGRESS_SECONDS = 30.0  # a long epoch logs its progress at most this often


def early_stopping_k(eval_k: int, num_articles: int) -> int:
    """`eval_k`, or a tenth of the corpus when `eval_k` would find every target anyway.

    With K >= the corpus size recall@K is 1.0 from the first epoch, so early stopping would keep
    the first epoch's weights.
    """
    if eval_k < num_articles:
        return eval_k
    k = max(1, num_articles // 10)
    LOG.warning(
        "eval_k=%d is not smaller than the corpus (%d articles): early stopping uses recall@%d instead",
        eval_k,
        num_articles,
        k,
    )
    return k


@contextlib.contextmanager
def frozen_heap():
    """Python's cyclic garbage collector skips every object alive on entry (TensorFlow's, Keras's,
    the model's) until exit: its full collections, triggered by each step's small allocations,
    walked them all (~1 ms of a ~30 ms step at 10^6; training_issue16.jsonl)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _mean(losses: list[tf.Tensor]) -> float:
    """The mean of the step losses, as a float64 mean of their float values (nan when empty)."""
    return float(np.mean([float(loss) for loss in losses])) if losses else float("nan")


def fit(
    trainer: Trainer,
    dataset: tf.data.Dataset,
    steps_per_epoch: int,
    eval_set: EvalSet | ReplayValidation | None,
    corpus_ids: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Runs the epochs with early stopping on validation recall; restores the best weights.

    `dataset`: repeated batches (`data.training_dataset(..., repeat=True)`); each epoch takes the
    next `steps_per_epoch` of them (ValueError if it ends sooner). With `eval_set` None (or empty)
    every `config.epochs` epoch runs and the last one is kept.

    Returns the training log: `epochs` (one dict per epoch: epoch, loss, validation recall,
    seconds, of which validation_seconds scoring the validation set, and the process's cpu_seconds),
    `best_epoch`, `best_validation_recall`, `epochs_run`, `stopped_early`, `train_seconds`.
    """
    config = trainer.config
    k = early_stopping_k(config.eval_k, len(corpus_ids[model_lib.LABEL_KEY]))
    log: list[dict[str, Any]] = []
    best: tuple[float, int, list[np.ndarray] | None] = (-1.0, 0, None)  # recall, epoch, weights
    stale = 0
    started = time.monotonic()
    batches = iter(dataset)  # repeated: each epoch takes the next `steps_per_epoch` batches
    for epoch in range(1, config.epochs + 1):
        epoch_started = last_progress = time.monotonic()
        cpu_started = time.process_time()
        # Each step's loss stays a tensor until it is logged: reading it back as a float every step
        # cost ~1-1.5 ms of a ~30 ms step (measured; training_issue16.jsonl).
        losses: list[tf.Tensor] = []
        for step, batch in enumerate(itertools.islice(batches, steps_per_epoch), start=1):
            losses.append(trainer.step(batch))
            if time.monotonic() - last_progress > PROGRESS_SECONDS:
                last_progress = time.monotonic()
                LOG.info(
                    "epoch %d/%d: step %d/%d, loss %.4f", epoch, config.epochs, step, steps_per_epoch, _mean(losses)
                )
        if len(losses) < steps_per_epoch:
            raise ValueError(
                f"the training dataset ended after {len(losses)} of epoch {epoch}'s {steps_per_epoch} "
                "batches: fit needs data.training_dataset(..., repeat=True)"
            )
        mean_loss = _mean(losses)
        if not np.isfinite(mean_loss):
            raise RuntimeError(f"training diverged at epoch {epoch} (loss {mean_loss}); lower --learning-rate")
        validation_started = time.monotonic()
        recall = trainer.eval_recall(eval_set, corpus_ids, k) if eval_set is not None and len(eval_set) else None
        seconds = time.monotonic() - epoch_started
        improved = recall is not None and recall > best[0]
        entry = {
            "epoch": epoch,
            "loss": round(mean_loss, 6),
            f"validation_recall@{k}": recall,
            "seconds": round(seconds, 2),
            "validation_seconds": round(time.monotonic() - validation_started, 2),
            "cpu_seconds": round(time.process_time() - cpu_started, 2),  # all threads: less load-dependent
        }
        log.append(entry)
        LOG.info(
            "epoch %d/%d: loss %.4f, validation recall@%d %s%s, %.1f s",
            epoch,
            config.epochs,
            mean_loss,
            k,
            "n/a" if recall is None else f"{recall:.4f}",
            " (best)" if improved else "",
            seconds,
        )
        if recall is None:
            continue
        if improved:
            best = (recall, epoch, trainer.snapshot())
            stale = 0
        else:
            stale += 1
            if stale >= config.early_stopping_patience > 0:
                LOG.info("no better validation recall for %d epochs: stopping, keeping epoch %d", stale, best[1])
                break
    best_recall: float | None = best[0]
    best_epoch = best[1]
    if best[2] is not None:
        trainer.restore(best[2])
    else:  # no validation split: keep the last epoch
        best_recall, best_epoch = None, len(log)
        if eval_set is None or not len(eval_set):
            LOG.info("no validation examples: all %d epochs run, the last epoch's weights are kept", len(log))
    return {
        "epochs": log,
        "validation_k": k,
        "best_epoch": best_epoch,
        "best_validation_recall": best_recall,
        "epochs_run": len(log),
        "stopped_early": len(log) < config.epochs,
        "train_seconds": round(time.monotonic() - started, 2),
        "validation_examples": 0 if eval_set is None else len(eval_set),
    }
