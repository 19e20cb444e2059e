-- The candidate corpus: active articles (status NULL or 'active', any case), optionally only
-- those created at most @max_article_age_days days before as_of (articles without created_at are
-- kept), with their view counts up to as_of.
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
-- The first four CTEs (articles, valid_events, cutoff, events) are the shared cleaning steps and
-- are identical in training_examples.sql, user_histories.sql, articles.sql and input_report.sql.
WITH
articles AS (
  -- One row per article id; a duplicated id keeps its most recently created row. Missing or
  -- empty attributes become '__missing__' (features.MISSING_ATTRIBUTE) so vocabularies stay dense
  -- and '' stays free for padding.
  SELECT article_id, title, category, region, created_at, status
  FROM (
    SELECT
      article_id,
      title,
      COALESCE(NULLIF(category, ''), '__missing__') AS category,
      COALESCE(NULLIF(region, ''), '__missing__') AS region,
      created_at,
      status,
      ROW_NUMBER() OVER (
        PARTITION BY article_id
        -- DESC sorts NULL last in GoogleSQL: rows without created_at lose the tie.
        ORDER BY created_at DESC, status, category, region, title
      ) AS copy_number
    FROM {{articles}}
    WHERE article_id IS NOT NULL AND article_id != ''
  )
  WHERE copy_number = 1
),
valid_events AS (
  -- Drops events with a missing (NULL or empty) id or time, collapses exact duplicates
  -- (same user, article and viewed_at), and drops events of articles the articles table lacks.
  SELECT DISTINCT e.user_id, e.article_id, e.viewed_at
  FROM {{events}} AS e
  JOIN articles AS a ON a.article_id = e.article_id
  WHERE e.user_id IS NOT NULL AND e.user_id != '' AND e.viewed_at IS NOT NULL
),
cutoff AS (
  SELECT COALESCE(@as_of, (SELECT MAX(viewed_at) FROM valid_events)) AS as_of
),
events AS (
  -- Only what was known at as_of (and, optionally, the last @lookback_days days of it).
  SELECT v.user_id, v.article_id, v.viewed_at
  FROM valid_events AS v
  CROSS JOIN cutoff AS c
  WHERE v.viewed_at <= c.as_of
    AND (@lookback_days IS NULL
      OR v.viewed_at >= TIMESTAMP_SUB(c.as_of, INTERVAL @lookback_days DAY))
),
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
WHERE (a.status IS NULL OR LOWER(TRIM(a.status)) = 'active')
  AND (@max_article_age_days IS NULL
    OR a.created_at IS NULL
    OR a.created_at >= TIMESTAMP_SUB(c.as_of, INTERVAL @max_article_age_days DAY))
