-- The candidate corpus: the articles live at as_of, optionally only
-- those created at most @max_article_age_days days before as_of (articles without created_at are
-- kept), with their view counts up to as_of. Live at as_of: created_at <= as_of (or no created_at)
-- and as_of < removed_at; a row without removed_at is live when its status is NULL or 'active'
-- (any case). A status of 'sold' with a removed_at after as_of was still up at as_of.
--
-- Columns (homefeed.features.CORPUS_COLUMNS):
--   article_id, title, category, region, created_at, view_count
--
-- Parameters:
--   @as_of                 TIMESTAMP  cut-off; NULL = the latest valid event (never the wall clock)
--   @max_article_age_days  INT64      NULL = no age limit
--   @lookback_days         INT64      view counts only over the last N days; NULL = all
--
-- The two double-brace placeholders below are replaced by relations over the input tables with
-- exactly the contract columns (absent optional article columns appear as NULL); table names
-- cannot be query parameters, see sql/__init__.py.
--
-- {{cleaned_inputs}} is sql/cleaned_inputs.sql: the cleaning steps shared by every query
-- (CTEs articles, valid_events, cutoff, events).
WITH
{{cleaned_inputs}},
view_counts AS (
  SELECT article_id, COUNT(*) AS view_count
  FROM events
  GROUP BY article_id
)
SELECT
  a.article_id,
  a.title,
  a.category,
  a.region,
  a.created_at,
  COALESCE(v.view_count, 0) AS view_count
FROM articles AS a
LEFT JOIN view_counts AS v ON v.article_id = a.article_id
CROSS JOIN cutoff AS c
WHERE (a.created_at IS NULL OR a.created_at <= c.as_of)
  AND (CASE WHEN a.removed_at IS NOT NULL THEN c.as_of < a.removed_at
    ELSE a.status IS NULL OR LOWER(TRIM(a.status)) = 'active' END)
  AND (@max_article_age_days IS NULL
    OR a.created_at IS NULL
    OR a.created_at >= TIMESTAMP_SUB(c.as_of, INTERVAL @max_article_age_days DAY))
