-- Every listing that existed up to as_of, whatever its status, with its lifetime: the evaluation's
-- corpus at a view's time t is exactly the listings with created_at <= t < removed_at
-- (trainer/evaluation/served_corpus.py). Nothing here is derived from views.
--
-- Columns (homefeed.features.LISTINGS_COLUMNS):
--   article_id, title, category, region, created_at, removed_at
--
-- removed_at: the input's removed_at; a row marked sold or deleted without one gets as_of (it was
-- gone by then at the latest: an upper bound of its lifetime); NULL: still up at as_of. Listings
-- created after as_of are left out.
--
-- Parameters:
--   @as_of  TIMESTAMP  cut-off; NULL = the latest valid event (never the wall clock)
--
-- {{cleaned_inputs}} is sql/cleaned_inputs.sql: the cleaning steps shared by every query.
WITH
{{cleaned_inputs}},
lifetimes AS (
  SELECT
    a.article_id,
    a.title,
    a.category,
    a.region,
    a.created_at,
    CASE
      WHEN a.removed_at IS NOT NULL THEN a.removed_at
      WHEN a.status IS NULL OR LOWER(TRIM(a.status)) = 'active' THEN CAST(NULL AS TIMESTAMP)
      ELSE c.as_of
    END AS removed_at
  FROM articles AS a
  CROSS JOIN cutoff AS c
  WHERE a.created_at IS NULL OR a.created_at <= c.as_of
)
SELECT article_id, title, category, region, created_at, removed_at
FROM lifetimes
