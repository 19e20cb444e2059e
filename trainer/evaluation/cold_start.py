"""Cold-start evaluation: how well new listings are found, the reason the article tower reads content.

A test view is *new* when its target article appears in no view of the TRAIN split (as label or in
a history): the model has never trained on its id (it is one of the OOV ids) and it was first seen
after the training data was cut; on MovieLens, a film first rated after the training views. Its
recall@K is reported for the model and for the baselines that can rank an article without views
of its own (trending, and the category/region popularity baseline, trainer/evaluation/baselines.py), on the
same users with the same exclusions as the overall figures, over the corpus live at each view
(trainer/evaluation/served_corpus.py): a new listing sold before as_of was still a candidate when it was
viewed, so every new test view is rankable unless the user had seen the listing already.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from homefeed import features
from trainer.evaluation import metrics as metrics_lib

DEFINITION = "test views whose target article appears in no view of the train split (its id unseen in training)"


FRESH_DEFINITION = "test views whose target was first viewed (by anyone) less than a day before the view"
FRESH_WINDOW_MS = 86_400_000.0


def fresh_target_mask(table: pa.Table, targets: Sequence[str], times_ms: np.ndarray) -> np.ndarray:
    """bool `[n]`: which test views' targets were first viewed less than a day before the view (the
    view itself included): the freshest listings, where a trending counter is strongest.

    A listing's first view is the earliest labelled view of it in any split; views of unknown time
    (each user's first view, known only from a history) do not date it. A view without a time is
    never fresh.
    """
    if features.VIEWED_AT not in table.column_names:
        return np.zeros(len(targets), bool)
    frame = pd.DataFrame(
        {
            "label": table.column(features.LABEL).to_numpy(zero_copy_only=False).astype(str),
            "t": pd.to_datetime(table.column(features.VIEWED_AT).to_pandas(), utc=True),
        }
    ).dropna()
    first = frame.groupby("label")["t"].min().map(lambda t: t.value / 1e6)
    first_ms = first.reindex(pd.Index(list(map(str, targets)))).to_numpy(np.float64)
    times = np.asarray(times_ms, np.float64)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(times - first_ms, nan=np.inf) < FRESH_WINDOW_MS


def trained_articles(table: pa.Table) -> set[str]:
    """Every article id in a view of the train split (labels and histories)."""
    train = table.filter(pc.equal(table.column(features.SPLIT), features.TRAIN_SPLIT))
    labels = train.column(features.LABEL).to_numpy(zero_copy_only=False)
    history = pc.list_flatten(train.column(features.HISTORY).combine_chunks()).to_numpy(zero_copy_only=False)
    return set(map(str, labels)) | set(map(str, history))


def new_target_mask(table: pa.Table, targets: Sequence[str]) -> np.ndarray:
    """bool `[n]`: which `targets` (article ids of test views) are new (see module docstring)."""
    known = trained_articles(table)
    return np.fromiter((str(t) not in known for t in targets), bool, count=len(targets))


def cold_start_metrics(
    new: np.ndarray,
    ranks: Mapping[str, np.ndarray],
    ks: Sequence[int],
    ndcg_k: int,
    rankable: np.ndarray,
) -> dict[str, Any]:
    """`{"definition", "num_users", "num_rankable", "<name>": {"recall@K": ...}}` over the new
    test views, for every ranking in `ranks` (name -> ranks of all test users, aligned with `new`);
    any other slice (`fresh`) the same way, with its `definition` put in after.

    `rankable`: bool `[n]`, the target is in the corpus and not already viewed (the others are
    misses by definition; recall is over all new views, as overall recall is over all views).
    """
    out: dict[str, Any] = {
        "definition": DEFINITION,
        "num_users": int(new.sum()),
        "num_rankable": int((new & rankable).sum()),
    }
    for name, r in ranks.items():
        out[name] = metrics_lib.ranking_metrics(np.asarray(r)[new], ks, ndcg_k) if new.any() else {}
    return out


def bounded_seen(views: pd.DataFrame, length: int = features.SEEN_LENGTH) -> pd.DataFrame:
    """Each user's `length` most recently viewed distinct articles (`user_id, article_id`), the
    service's seen set (features.SEEN): views with unknown time count as the oldest."""
    ordered = views.assign(_t=pd.to_datetime(views["viewed_at"], utc=True)).sort_values(
        ["user_id", "_t"], ascending=[True, False], na_position="last", kind="stable"
    )
    ordered = ordered.drop_duplicates(["user_id", features.ARTICLE_ID])
    return ordered.groupby("user_id", sort=False).head(length)[["user_id", features.ARTICLE_ID]]
