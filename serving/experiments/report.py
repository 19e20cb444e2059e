"""`candidates experiment report`: exposures joined with later views, per arm, with intervals.

A view counts for an arm when its user was exposed to that listing in that arm at most `window`
before the view (attributed view). Per arm:

  users                 users with at least one exposure (users seen in two arms, e.g. after a
                        change of shares, and exposures chosen with `?arm=` are left out, and counted)
  exposures             answers logged
  views_per_user        attributed views / users (users without a view count as 0)
  exposed_view_share    attributed views / every view of those users from their first exposure to
                        `window` after their last one: how much of their viewing the candidates explain
  new_listing_share     attributed views of listings created at most `new_days` before the view /
                        attributed views (needs the articles table)
  coverage              distinct listings exposed / listings in the catalogue (the articles table, else
                        every listing exposed in any arm)

Differences against the control arm (`--control`, else the popularity arm, else the first) with
95 % percentile intervals from a bootstrap over users (each arm's users resampled apart); the
sample-ratio-mismatch check is Pearson's chi-square of users per arm against the shares logged
with each exposure.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from serving.experiments import stats

LOG = logging.getLogger(__name__)

SRM_P_VALUE = 0.001  # below it the split is not what was configured: the comparison is not trusted
VIEW_COLUMNS = ("user_id", "article_id", "viewed_at")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text: str) -> pd.Timedelta:
    """`24h`, `30m`, `7d`, `90s` as a Timedelta; ValueError naming the text otherwise."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"--window {text!r}: expected a positive duration like 24h, 30m, 7d or 90s")
    return pd.Timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


@dataclass
class ArmSummary:
    arm: str
    share: float
    users: int
    exposures: int
    views: int
    views_per_user: float
    exposed_view_share: float
    new_listing_share: float | None
    coverage: float


@dataclass
class Difference:
    """`metric` of `arm` minus the control's, with its 95 % interval, and the relative change."""

    arm: str
    metric: str
    difference: float
    low: float
    high: float
    relative: float
    relative_low: float
    relative_high: float

    @property
    def significant(self) -> bool:
        return not (self.low <= 0 <= self.high)


@dataclass
class ExperimentReport:
    experiment: str
    window_s: float
    control: str
    arms: list[ArmSummary]
    differences: list[Difference]
    srm_statistic: float
    srm_p_value: float
    excluded_users: int
    overridden_exposures: int
    replicates: int
    notes: list[str] = field(default_factory=list)

    @property
    def srm(self) -> bool:
        return self.srm_p_value < SRM_P_VALUE

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "srm": self.srm}


def read_views(path: str | os.PathLike) -> pd.DataFrame:
    """The views table (Parquet: user_id, article_id, viewed_at; the sample-data events.parquet)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"events file {path} does not exist")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:
        raise ValueError(f"cannot read events file {path}: {error}") from None
    missing = [c for c in VIEW_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"events file {path} lacks column(s) {', '.join(missing)} (needs {', '.join(VIEW_COLUMNS)})")
    frame = frame[list(VIEW_COLUMNS)].copy()
    frame["viewed_at"] = pd.to_datetime(frame["viewed_at"], utc=True)
    return frame


def _exposed_pairs(exposures: pd.DataFrame) -> pd.DataFrame:
    """One row per (exposure, listing): user_id, article_id, served_at."""
    lists = exposures["candidates"]
    lengths = lists.map(len).to_numpy()
    ids = [item["article_id"] for items in lists for item in items]
    return pd.DataFrame(
        {
            "user_id": np.repeat(exposures["user_id"].to_numpy(), lengths),
            "article_id": ids,
            "served_at": np.repeat(exposures["served_at"].to_numpy(), lengths),
        }
    )


def build_report(
    exposures: pa.Table,
    views: pd.DataFrame,
    window: pd.Timedelta,
    articles: pd.DataFrame | None = None,
    new_days: float = 7.0,
    control: str | None = None,
    replicates: int = 1000,
    seed: int = 0,
) -> ExperimentReport:
    """The report of `exposures` (serving/experiments/exposures.SCHEMA) against `views` (read_views)."""
    frame = exposures.to_pandas()
    if frame.empty:
        raise ValueError("no exposures to report on")
    frame["served_at"] = pd.to_datetime(frame["served_at"], utc=True)
    names = frame["experiment"].unique().tolist()
    notes = []
    if len(names) > 1:
        notes.append(f"exposures of several experiments mixed: {', '.join(map(str, names))}")
    overridden = int(frame["overridden"].sum())
    frame = frame[~frame["overridden"]]
    arms_of_user = frame.groupby("user_id")["arm"].nunique()
    mixed = arms_of_user.index[arms_of_user > 1]
    frame = frame[~frame["user_id"].isin(mixed)]
    shares = frame.groupby("arm")["share"].last()
    arm_names = sorted(shares.index)
    if control is None:
        control = _popularity_arm(frame) or arm_names[0]
    if control not in arm_names:
        raise ValueError(f"--control {control!r} is not an arm of these exposures (arms: {', '.join(arm_names)})")

    user_arm = frame.groupby("user_id")["arm"].first()
    first = frame.groupby("user_id")["served_at"].min()
    last = frame.groupby("user_id")["served_at"].max()
    user_views = views[views["user_id"].isin(user_arm.index)]
    user_views = user_views.assign(first=user_views["user_id"].map(first), last=user_views["user_id"].map(last))
    user_views = user_views[
        (user_views["viewed_at"] >= user_views["first"]) & (user_views["viewed_at"] <= user_views["last"] + window)
    ]
    total_per_user = user_views.groupby("user_id").size()

    pairs = _exposed_pairs(frame)
    joined = user_views[list(VIEW_COLUMNS)].merge(pairs, on=["user_id", "article_id"])
    joined = joined[
        (joined["viewed_at"] >= joined["served_at"]) & (joined["viewed_at"] <= joined["served_at"] + window)
    ]
    attributed = joined.drop_duplicates(list(VIEW_COLUMNS))[list(VIEW_COLUMNS)]
    attributed_per_user = attributed.groupby("user_id").size()
    new_per_user = None
    if articles is not None:
        created = pd.to_datetime(articles.set_index("article_id")["created_at"], utc=True)
        age = attributed["viewed_at"] - attributed["article_id"].map(created)
        is_new = age.notna() & (age <= pd.Timedelta(days=new_days))
        new_per_user = attributed[is_new.to_numpy()].groupby("user_id").size()
    catalogue = len(articles) if articles is not None else pairs["article_id"].nunique()

    per_arm: dict[str, np.ndarray] = {}
    summaries = []
    for arm in arm_names:
        users = user_arm.index[user_arm == arm]
        a = attributed_per_user.reindex(users, fill_value=0).to_numpy(np.float64)
        t = total_per_user.reindex(users, fill_value=0).to_numpy(np.float64)
        n = new_per_user.reindex(users, fill_value=0).to_numpy(np.float64) if new_per_user is not None else a * 0
        per_arm[arm] = np.column_stack([a, t, n])
        arm_frame = frame[frame["arm"] == arm]
        exposed_ids = {item["article_id"] for items in arm_frame["candidates"] for item in items}
        summaries.append(
            ArmSummary(
                arm=arm,
                share=float(shares[arm]),
                users=len(users),
                exposures=len(arm_frame),
                views=int(a.sum()),
                views_per_user=float(a.mean()) if len(a) else math.nan,
                exposed_view_share=float(a.sum() / t.sum()) if t.sum() else math.nan,
                new_listing_share=(float(n.sum() / a.sum()) if a.sum() else math.nan)
                if new_per_user is not None
                else None,
                coverage=len(exposed_ids) / catalogue if catalogue else math.nan,
            )
        )

    rng = np.random.default_rng(seed)
    differences = []
    metrics = {
        "views_per_user": lambda sums, n: sums[:, 0] / max(n, 1),
        "exposed_view_share": lambda sums, n: _ratio(sums[:, 0], sums[:, 1]),
    }
    if new_per_user is not None:
        metrics["new_listing_share"] = lambda sums, n: _ratio(sums[:, 2], sums[:, 0])
    base = per_arm[control]
    for arm in arm_names:
        if arm == control:
            continue
        for metric, statistic in metrics.items():
            point_t = statistic(per_arm[arm].sum(axis=0, keepdims=True), len(per_arm[arm]))[0]
            point_c = statistic(base.sum(axis=0, keepdims=True), len(base))[0]
            t, c = stats.difference_intervals(per_arm[arm], base, statistic, replicates, rng)
            low, high = stats.interval(t - c)
            with np.errstate(divide="ignore", invalid="ignore"):
                relative_low, relative_high = stats.interval(t / c - 1)
                relative = point_t / point_c - 1 if point_c else math.nan
            differences.append(
                Difference(
                    arm, metric, float(point_t - point_c), low, high, float(relative), relative_low, relative_high
                )
            )

    chi_square, p_value = stats.sample_ratio_check([s.users for s in summaries], [s.share for s in summaries])
    if p_value < SRM_P_VALUE:
        notes.append(
            f"sample ratio mismatch (chi-square {chi_square:.1f}, p={p_value:.2g}): the users per arm do not follow "
            "the configured shares; the differences are not trustworthy until the cause is found"
        )
    if len(mixed):
        notes.append(f"{len(mixed)} user(s) exposed in more than one arm are left out")
    return ExperimentReport(
        experiment=str(names[0]),
        window_s=window.total_seconds(),
        control=control,
        arms=summaries,
        differences=differences,
        srm_statistic=chi_square,
        srm_p_value=p_value,
        excluded_users=len(mixed),
        overridden_exposures=overridden,
        replicates=replicates,
        notes=notes,
    )


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator


def _popularity_arm(frame: pd.DataFrame) -> str | None:
    """The arm whose every answer was the popular list (the experiment's popularity control), if one."""
    by_arm = frame.groupby("arm")["fallback"].all()
    candidates = by_arm.index[by_arm].tolist()
    return candidates[0] if len(candidates) == 1 else None


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def format_report(report: ExperimentReport) -> str:
    """The report as text tables."""
    lines = [
        f"experiment {report.experiment}: window {report.window_s / 3600:g}h, control {report.control}, "
        f"{report.replicates} bootstrap replicates over users",
        "",
        f"{'arm':<16} {'share':>6} {'users':>8} {'exposures':>10} {'views':>8} {'views/user':>11} "
        f"{'exposed share':>14} {'new share':>10} {'coverage':>9}",
    ]
    for s in report.arms:
        lines.append(
            f"{s.arm:<16} {s.share:>6.3f} {s.users:>8,} {s.exposures:>10,} {s.views:>8,} {_number(s.views_per_user):>11} "
            f"{_number(s.exposed_view_share):>14} {_number(s.new_listing_share):>10} {_number(s.coverage):>9}"
        )
    lines += ["", f"{'arm':<16} {'metric':<20} {'difference [95% interval]':>36} {'relative [95% interval]':>32}"]
    for d in report.differences:
        mark = " *" if d.significant else ""
        lines.append(
            f"{d.arm:<16} {d.metric:<20} {_number(d.difference):>10} [{_number(d.low)}, {_number(d.high)}]"
            f"{'':>6} {d.relative * 100:>+7.2f}% [{d.relative_low * 100:+.2f}%, {d.relative_high * 100:+.2f}%]{mark}"
        )
    lines += [
        "",
        f"sample ratio check: chi-square {report.srm_statistic:.2f}, p={report.srm_p_value:.3g} "
        f"({'MISMATCH' if report.srm else 'ok'}); {report.overridden_exposures} exposures chosen with ?arm= left out",
    ]
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def write_plot(path: Path, report: ExperimentReport) -> None:
    """Relative difference of each metric against the control, with its interval, as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from homefeed import atomic

    rows = report.differences
    fig, ax = plt.subplots(figsize=(6, 1 + 0.45 * max(len(rows), 1)), dpi=100)
    y = np.arange(len(rows))[::-1]
    for yi, d in zip(y, rows):
        color = "tab:green" if d.relative_low > 0 else "tab:red" if d.relative_high < 0 else "tab:gray"
        ax.errorbar(
            d.relative * 100,
            yi,
            xerr=[[max(0.0, (d.relative - d.relative_low) * 100)], [max(0.0, (d.relative_high - d.relative) * 100)]],
            fmt="o",
            color=color,
            capsize=3,
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [f"{d.arm}: {d.metric}" for d in rows])
    ax.set_xlabel(f"change against {report.control} (%), 95 % interval")
    ax.set_title(f"experiment {report.experiment}", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    try:
        atomic.write_with(path, lambda temporary: fig.savefig(temporary, format="png"))
    finally:
        plt.close(fig)


def write_html(out_dir: Path, report: ExperimentReport) -> Path:
    """report.html (with lift.png and report.json beside it) in `out_dir`; returns the page's path."""
    import html
    import json

    from homefeed import atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    write_plot(out_dir / "lift.png", report)
    atomic.write_text(out_dir / "report.json", json.dumps(report.to_dict(), indent=2, default=str))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>experiment {html.escape(report.experiment)}</title>
<style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f6f6f6;padding:1em}}</style></head>
<body><h1>Experiment {html.escape(report.experiment)}</h1>
<p>Attributed views: a view of a listing the user was shown within {report.window_s / 3600:g} h before it.
Intervals: 95 %, bootstrap over users ({report.replicates} replicates). Control: {html.escape(report.control)}.</p>
<img src="lift.png" alt="relative differences against the control">
<pre>{html.escape(format_report(report))}</pre>
</body></html>
"""
    atomic.write_text(out_dir / "report.html", page)
    return out_dir / "report.html"
