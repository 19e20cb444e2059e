"""What the generated sample world holds: measurements of homefeed/sample/marketplace.py's output.

`type_repeat`: does a title say anything about who opens it, beyond its category? For every view
that follows an earlier view of the same user in the same category, whether its product type (the
title's noun) is that previous view's type; the reference is the same probability with each view's
type replaced by a random one of its category's views (a shuffle within the category: what
category popularity alone explains). Lift ~1: the title carries nothing about the user beyond the
category, and no model can place a new listing better from its title than a category/region
baseline. Used by tests/homefeed/test_sample_types.py and benchmarks/title_signal.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from homefeed.sample.marketplace import ADJECTIVES


def title_types(titles: pd.Series) -> pd.Series:
    """The noun of each generated `"<adjective> <noun>"` title (some adjectives have two words)."""
    return titles.str.replace("^(?:" + "|".join(ADJECTIVES) + ") ", "", regex=True)


def type_repeat(events: pd.DataFrame, articles: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """`{"views", "same_type_as_previous", "if_types_were_shuffled", "lift"}` (module docstring)
    over the `events` and `articles` tables of `sample_data.generate`."""
    a = articles.set_index("article_id")
    views = events.sort_values(["user_id", "viewed_at", "article_id"], kind="stable").reset_index(drop=True)
    views["category"] = a["category"].reindex(views["article_id"]).to_numpy()
    views["type"] = title_types(a["title"]).reindex(views["article_id"]).to_numpy()
    rng = np.random.default_rng(seed)
    views["shuffled"] = views.groupby("category")["type"].transform(lambda s: rng.permutation(s.to_numpy()))
    previous = views.groupby(["user_id", "category"])["type"].shift(1)
    has = previous.notna()
    same = float((views["type"] == previous)[has].mean())
    reference = float((views["shuffled"] == previous)[has].mean())
    return {
        "views": int(has.sum()),
        "same_type_as_previous": round(same, 4),
        "if_types_were_shuffled": round(reference, 4),
        "lift": round(same / reference, 3),
    }
