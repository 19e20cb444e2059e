"""The experiment as the service runs it: each arm's model, the user assignment, the exposure log.

Each model arm has its own `ModelHolder` (serving/versions/holder.py), loaded at start; arms naming
the same directory share one holder, so a model is loaded once whatever the number of arms that
serve it. The popularity arm serves the popular list of the version `--model` serves. A reload of
`--model` changes neither the assignment (serving/experiments/assign.py: the salt and the user id
only) nor the arms' models (published versions do not change).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.experiments.assign import Assigner
from serving.experiments.config import ArmConfig, ExperimentConfig
from serving.experiments.exposures import Exposure, ExposureLog
from serving.recommend import candidates as candidate_logic
from serving.versions.holder import ModelHolder
from serving.versions.pair import ModelPair

LOG = logging.getLogger(__name__)

REQUEST_ID_MAX = 128


@dataclass(frozen=True)
class ArmChoice:
    """The arm a request is served by, and whether `?arm=` chose it."""

    arm: ArmConfig
    overridden: bool


class Experiment:
    """Arms, their models and the exposure log of one `--experiment` file.

    Args:
      config: the experiment (serving/experiments/config.py).
      loader: `model_dir -> ModelPair` with the service's options (serving/http/startup.py).
      metrics: the service's metrics (reload counters of the arms' holders).
      log: where exposures go, or None.
    """

    def __init__(self, config: ExperimentConfig, loader: Callable[[Path], ModelPair], metrics=None, log=None):
        self.config = config
        self.assigner = Assigner(config.salt, [a.name for a in config.arms], [a.share for a in config.arms])
        self.log: ExposureLog | None = log
        by_dir: dict[Path, ModelHolder] = {}
        self.holders: dict[str, ModelHolder | None] = {}
        for arm in config.arms:
            if arm.is_popularity:
                self.holders[arm.name] = None
                continue
            key = Path(arm.model).resolve()
            if key not in by_dir:
                by_dir[key] = ModelHolder(key, loader, metrics)
            self.holders[arm.name] = by_dir[key]
        self._distinct = list(by_dir.values())

    async def load(self) -> None:
        """Loads every model arm (once per directory); raises naming the arm whose model does not load."""
        for holder in self._distinct:
            result = await holder.reload_async("startup")
            if not result.ok:
                arms = [name for name, h in self.holders.items() if h is holder]
                raise RuntimeError(
                    f"experiment arm(s) {', '.join(arms)}: cannot load {holder.source}: {result.message}"
                )
            assert holder.pair is not None
            LOG.info(
                "experiment %s: arm(s) %s serve model %s", self.config.name, arms_of(self, holder), holder.pair.version
            )

    def close(self) -> None:
        for holder in self._distinct:
            holder.close()
        if self.log is not None:
            self.log.close()

    def choose(self, user_id: str, override: str | None) -> ArmChoice:
        """The user's arm, or `override` (already authorised by the caller). KeyError for an unknown arm name."""
        if override is not None:
            arm = self.config.arm(override)
            if arm is None:
                raise KeyError(override)
            return ArmChoice(arm, True)
        arm = self.config.arm(self.assigner.arm_of(user_id))
        assert arm is not None
        return ArmChoice(arm, False)

    def pair_of(self, arm: ArmConfig, main: ModelPair) -> ModelPair | None:
        """The pair that answers for `arm` (the popularity arm: the `--model` pair); None while not loaded."""
        holder = self.holders[arm.name]
        return main if holder is None else holder.pair

    async def answer(self, choice: ArmChoice, main: ModelPair, dispatcher, prepare_apart: bool, *arguments):
        """`(answer, pair)` for the request `arguments` (`store, user_id, k, exclude_seen, live, regions`) on
        the chosen arm: the model arms through the batch dispatcher (serving/recommend/dispatch.py), the
        popularity arm directly (on the thread pool when the history read waits on the network)."""
        pair = self.pair_of(choice.arm, main)
        if pair is None:
            return None, None
        if self.holders[choice.arm.name] is None:
            if prepare_apart:
                loop = asyncio.get_running_loop()
                answer = await loop.run_in_executor(None, candidate_logic.popular_for, pair, *arguments)
            else:
                answer = candidate_logic.popular_for(pair, *arguments)
            return answer, pair
        return await dispatcher.recommend(pair, *arguments), pair

    def describe(self) -> dict[str, Any]:
        """What /readyz says about the experiment."""
        arms = []
        for arm in self.config.arms:
            holder = self.holders[arm.name]
            version = "popularity" if holder is None else getattr(holder.pair, "version", None)
            arms.append({"name": arm.name, "share": arm.share, "model_version": version})
        return {
            "name": self.config.name,
            "arms": arms,
            "exposures_dropped": self.log.dropped if self.log is not None else None,
        }

    def record(self, request_id: str, choice: ArmChoice, answer, pair: ModelPair) -> None:
        """Queues the answer's exposure (no-op without a log); never blocks."""
        if self.log is None:
            return
        self.log.record(
            Exposure(
                request_id=request_id,
                user_id=answer.user_id,
                arm=choice.arm.name,
                overridden=choice.overridden,
                share=choice.arm.share,
                model_version=answer.model_version,
                fallback=answer.fallback,
                served_at=time.time(),
                ids=functools.partial(candidate_logic.exposed_ids, answer, pair, self.config.exposure_top_n),
            )
        )


def build_experiment(path, loader: Callable[[Path], ModelPair], metrics=None) -> Experiment:
    """The experiment of `--experiment path`, its exposure log started when the file names a directory,
    its counters (`candidates_exposures_{written,dropped}_total`) on `metrics.registry`."""
    from prometheus_client import Counter

    from serving.experiments.config import load_experiment

    config = load_experiment(path)
    log = None
    if config.exposure_dir is not None:
        registry = metrics.registry if metrics is not None else None
        kwargs = {"registry": registry} if registry is not None else {}
        dropped = Counter("candidates_exposures_dropped", "Exposures lost: queue full or file not written", **kwargs)
        written = Counter("candidates_exposures_written", "Exposures written to Parquet files", **kwargs)
        log = ExposureLog(config.exposure_dir, config.name, on_drop=dropped, on_written=written)
    return Experiment(config, loader, metrics, log)


def arms_of(experiment: Experiment, holder: ModelHolder) -> str:
    return ", ".join(name for name, h in experiment.holders.items() if h is holder)


def request_id_of(header: str | None) -> str:
    """The client's X-Request-ID when it is short printable ASCII, else a new random id."""
    if header and len(header) <= REQUEST_ID_MAX and header.isascii() and header.isprintable():
        return header
    return uuid.uuid4().hex
