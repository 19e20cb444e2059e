"""The publish gate as pure functions: the metric it reads, the decision it makes, and why.

recall@200 of the new model (from its `evaluation.json`, on the test split) must be at least
`PublishConfig.min_recall_at_200`. When its evaluation re-ran the published model on the same test
views (`candidates evaluate --published`), the two are compared pairwise: the candidate is
published when the 95 % paired bootstrap interval of its recall over the published model's reaches
1 (not worse beyond the interval), its recall beats the best baseline's on the same views, and it
does not lose to trending on new listings nor on the freshest ones (`SLICES`).
Otherwise the recalls stored from each version's own test views are compared (at most
`PublishConfig.max_regression` below), and the reason says they were not compared on the same views;
losing to trending on a slice refuses a version there too (and a first version).

A model trained on test views is never credited with recall from them, and the record says so:
  * the pipeline publishes a final fit on every view up to as_of, gated on the held-out model's
    figures (`figures_record`: whose figures they are, what the published model was trained on);
  * a refit model's own test figures are not held out: the reason says it was not gated on them;
  * a published model trained through a time after the candidate's first test view has seen some of
    those views: it is not compared with the candidate on recall there (the reason says so), only
    the floor, the best baseline and the slices gate.
components/publish/publish.py applies it and moves LATEST.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from homefeed.config import PublishConfig

# The metric the gate reads from evaluation.json.
GATE_METRIC = "recall@200"
# evaluation.json's record of whose figures they are when the model published is not the model
# evaluated (components/publish/publish_artifacts.py writes it; `figures_record`).
FIGURES_KEY = "figures_of"


class IncompleteModelError(ValueError):
    """The model directory is not a finished model + index; it must never go live."""


@dataclass(frozen=True)
class PublishDecision:
    """What `publish_model` decided and why.

    Attributes:
      published: True when LATEST now names `version`.
      version: the candidate model's version (its manifest's `model_version`).
      reason: one sentence a person can read in the KFP UI or a log.
      recall_at_200: the candidate's recall@200 on the test split.
      min_recall_at_200: the absolute floor it was held to.
      previous_version: the version LATEST named before (None when nothing was published yet).
      previous_recall_at_200: that version's recall@200 (None when unknown).
      max_regression: the tolerance against the previous version.
      version_dir: where the version lives when published, else None.
    """

    published: bool
    version: str
    reason: str
    recall_at_200: float
    min_recall_at_200: float
    previous_version: str | None = None
    previous_recall_at_200: float | None = None
    max_regression: float = 0.0
    version_dir: str | None = None
    # Pairwise, on the same test views (None when the evaluation did not re-run the published model):
    # the candidate's recall over the published model's, its 95 % paired interval, and the best
    # baseline's name and recall there.
    paired_ratio: float | None = None
    paired_interval: list[float] | None = None
    best_baseline: str | None = None
    best_baseline_recall_at_200: float | None = None
    # Whose recall was gated (the held-out model's version when the candidate is the final fit on
    # every view), and whether the candidate was trained on the test views those figures come from.
    gated_figures_of: str | None = None
    trained_on_test_views: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def recall_at_200(evaluation: dict[str, Any], source: str | os.PathLike = "evaluation.json") -> float:
    """The gate metric from a parsed `evaluation.json`.

    Accepts the metric at the top level or under `metrics` (`{"metrics": {"recall@200": ...}}`).

    Raises:
      IncompleteModelError: the metric is absent or not a number in [0, 1].
    """
    for holder in (evaluation, evaluation.get("metrics") or {}):
        if isinstance(holder, dict) and GATE_METRIC in holder:
            value = holder[GATE_METRIC]
            if isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0:
                return float(value)
            raise IncompleteModelError(f"{source}: {GATE_METRIC} is {value!r}, expected a number in [0, 1]")
    raise IncompleteModelError(f"{source} has no {GATE_METRIC!r} (keys: {sorted(evaluation)})")


@dataclass(frozen=True)
class PairedFigures:
    """The candidate and the published model on the same test views (from the candidate's
    evaluation.json): recall@200 ratio candidate / published with its 95 % paired bootstrap
    interval, and the best baseline there."""

    published_version: str
    published_recall: float
    ratio: float
    interval: tuple[float, float]
    best_baseline: str | None
    best_baseline_recall: float | None
    # Slices of the views (new listings, the freshest) where the candidate loses to trending:
    # "<slice>: model 0.31 < trending_1d 0.35".
    lost_to_trending: tuple[str, ...] = ()
    # When the published model was trained on views up to a time after the first of these test
    # views (it has seen some of them): that time; its recall there is not a held-out figure.
    published_trained_through: str | None = None


SLICES = {"cold_start": "new listings", "fresh": "listings first viewed within the day"}


def losses_to_trending(evaluation: dict[str, Any]) -> tuple[str, ...]:
    """The slices (SLICES) where the model's recall@200 is below the best trending baseline's."""
    out = []
    for key, label in SLICES.items():
        part = evaluation.get(key) or {}
        model = (part.get("model") or {}).get(GATE_METRIC)
        trending = [
            (name, float(m[GATE_METRIC]))
            for name, m in part.items()
            if name.startswith("trending") and isinstance(m, dict) and isinstance(m.get(GATE_METRIC), (int, float))
        ]
        if isinstance(model, (int, float)) and trending:
            name, best = max(trending, key=lambda item: item[1])
            if model < best:
                out.append(f"{label}: model {model:.4f} < {name} {best:.4f}")
    return tuple(out)


def _trains_on_test(fit: Any) -> bool:
    return isinstance(fit, dict) and "test" in (fit.get("splits") or [])


def figures_record(version: str, fit: Any, evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """What `evaluation.json` must say about its figures when they are not held-out figures of
    model `version` (fitted as `fit`, its metrics.json `fit`); None when they are.

    Returns `{"model_version": whose figures, "held_out": bool, "published_model_version",
    "published_model_fit", "note"}`: for a final fit gated on the held-out model's evaluation, or
    for a refit model evaluated on test views it was trained on.
    """
    evaluated = str(evaluation.get("model_version") or version)
    evaluated_fit = evaluation.get("fit")
    held_out = not _trains_on_test(evaluated_fit if evaluated != version else fit)
    if evaluated == version and held_out:
        return None
    through = (fit or {}).get("through") if isinstance(fit, dict) else None
    trained = "every view up to " + (through or "as_of") if _trains_on_test(fit) else "the train split"
    if evaluated != version:
        note = (
            f"the figures are model {evaluated}'s ({'held out: trained on the train split' if held_out else 'not held out'}"
            f", measured on test views it was not trained on); model {version}, the one published, was "
            f"trained on {trained} with the same settings, these test views included, and was not "
            "measured on them"
        )
    else:
        note = (
            f"model {version} was trained on its own test views ({trained}): these figures are not held out, "
            "and it was not gated on recall from views it had not seen"
        )
    return {
        "model_version": evaluated,
        "held_out": held_out,
        "published_model_version": version,
        "published_model_fit": fit,
        "note": note,
    }


def _first_test_view(evaluation: dict[str, Any]) -> str | None:
    first = (evaluation.get("test_views") or {}).get("first")
    return str(first) if first else None


def paired_figures(
    evaluation: dict[str, Any], published_version: str | None, published_fit: Any = None
) -> PairedFigures | None:
    """`PairedFigures` when `evaluation` re-ran `published_version` on its views, else None.

    `published_fit`: the published model's metrics.json `fit`; when it was trained on every view
    up to a time (`through`) at or after the first of these test views, `published_trained_through`
    says so (the published model has seen some of them)."""
    published = evaluation.get("published") or {}
    if published_version is None or published.get("model_version") != published_version:
        return None
    ratio = ((evaluation.get("intervals") or {}).get("ratio") or {}).get("model/published", {}).get(GATE_METRIC)
    if not ratio or GATE_METRIC not in published:
        return None
    scored = [
        (name, float(m[GATE_METRIC]))
        for name, m in (evaluation.get("baselines") or {}).items()
        if isinstance(m, dict) and isinstance(m.get(GATE_METRIC), (int, float))
    ]
    best = max(scored, key=lambda item: item[1], default=(None, None))
    through = published_fit.get("through") if _trains_on_test(published_fit) else None
    first = _first_test_view(evaluation)
    overlaps = through is not None and (first is None or _timestamp(through) >= _timestamp(first))
    return PairedFigures(
        published_version,
        float(published[GATE_METRIC]),
        float(ratio["ratio"]),
        (float(ratio["interval"][0]), float(ratio["interval"][1])),
        best[0],
        best[1],
        losses_to_trending(evaluation),
        str(through) if overlaps else None,
    )


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def decide(
    version: str,
    candidate_recall: float,
    previous_version: str | None,
    previous_recall: float | None,
    config: PublishConfig,
    protocols: tuple[Any, Any] | None = None,
    paired: PairedFigures | None = None,
    lost_to_trending: tuple[str, ...] = (),
) -> tuple[bool, str]:
    """The gate as a pure function: (publish?, reason).

    `lost_to_trending`: the slices where the candidate loses to trending (`losses_to_trending`):
    refused whether or not there is anything to compare with.

    `protocols` is (candidate's, published's) `evaluation.json` protocol record: when they differ
    (say the published version was evaluated at each view's own age, the candidate at the serving
    age) the two recalls are not comparable, and only the absolute floor applies. `paired`: both
    models on the same views (see module docstring); it decides whenever given.
    """
    floor = config.min_recall_at_200
    if candidate_recall < floor:
        return False, (f"not published: recall@200 {candidate_recall:.4f} is below the floor {floor:.4f}")
    if previous_version == version:
        return False, f"not published: version {version} is already the published version"
    if paired is not None:
        return _decide_paired(candidate_recall, paired)
    if lost_to_trending:
        return False, (
            f"not published: recall@200 {candidate_recall:.4f} clears the floor {floor:.4f} but loses to "
            f"trending where trending is strongest ({'; '.join(lost_to_trending)})"
        )
    if previous_version is not None and previous_recall is not None and protocols and protocols[0] != protocols[1]:
        return True, (
            f"published: recall@200 {candidate_recall:.4f} clears the floor {floor:.4f}; the published "
            f"{previous_version} ({previous_recall:.4f}) was evaluated under another protocol "
            f"({protocols[1] or 'unrecorded'}, now {protocols[0]}), so the two are not compared"
        )
    if previous_version is not None and previous_recall is not None:
        allowed = previous_recall - config.max_regression
        if candidate_recall < allowed:
            return False, (
                f"not published: recall@200 {candidate_recall:.4f} is worse than the published "
                f"{previous_version} ({previous_recall:.4f}) by {previous_recall - candidate_recall:.4f}, "
                f"more than the tolerated {config.max_regression:.4f}"
            )
        return True, (
            f"published: recall@200 {candidate_recall:.4f} clears the floor {floor:.4f} and is within "
            f"{config.max_regression:.4f} of the published {previous_version} ({previous_recall:.4f}; "
            "each on its own test views, not compared on the same ones)"
        )
    if previous_version is not None:
        return True, (
            f"published: recall@200 {candidate_recall:.4f} clears the floor {floor:.4f} "
            f"(the published {previous_version} has no readable recall to compare with)"
        )
    return True, f"published: recall@200 {candidate_recall:.4f} clears the floor {floor:.4f} (first version)"


def _decide_paired(candidate_recall: float, paired: PairedFigures) -> tuple[bool, str]:
    low, high = paired.interval
    against = (
        f"{paired.ratio:.3f}x the published {paired.published_version} ({paired.published_recall:.4f}) "
        f"on the same test views, 95 % paired interval [{low:.3f}, {high:.3f}]"
    )
    if paired.best_baseline is not None and candidate_recall <= (paired.best_baseline_recall or 0.0):
        return False, (
            f"not published: recall@200 {candidate_recall:.4f} does not beat the best baseline "
            f"{paired.best_baseline} ({paired.best_baseline_recall:.4f}) on the same views ({against})"
        )
    if paired.lost_to_trending:
        return False, (
            f"not published: recall@200 {candidate_recall:.4f} loses to trending where trending is "
            f"strongest ({'; '.join(paired.lost_to_trending)}; {against})"
        )
    if paired.published_trained_through is not None:
        return True, (
            f"published: recall@200 {candidate_recall:.4f} clears the floor"
            + (
                f" and beats the best baseline {paired.best_baseline} ({paired.best_baseline_recall:.4f})"
                if paired.best_baseline is not None
                else ""
            )
            + f"; not compared with the published {paired.published_version} on recall: it was trained on "
            f"every view up to {paired.published_trained_through}, some of these test views included ({against})"
        )
    if high < 1.0:
        return False, (
            f"not published: recall@200 {candidate_recall:.4f} is worse than the published "
            f"{paired.published_version} beyond the paired interval: {against}"
        )
    return True, (
        f"published: recall@200 {candidate_recall:.4f}, {against}, not worse beyond it"
        + (
            f"; beats the best baseline {paired.best_baseline} ({paired.best_baseline_recall:.4f})"
            if paired.best_baseline is not None
            else ""
        )
    )
