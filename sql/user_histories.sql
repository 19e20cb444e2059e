-- User histories: each user's latest @history_length views, most recent first (the serving
-- snapshot read by the online history store).
--
-- Columns (homefeed.features.USER_HISTORY_COLUMNS):
--   user_id, history, history_category, history_region (parallel arrays), last_viewed_at
--
-- Parameters:
--   @as_of                 TIMESTAMP  cut-off; NULL = the latest valid event (never the wall clock)
--   @history_length        INT64      H, the most recent views kept (>= 1)
--   @lookback_days         INT64      ignore views older than as_of - N days; NULL = keep all
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
ranked AS (
  -- Same order as the training examples: by (viewed_at, article_id), here counted from the end.
  SELECT
    e.user_id,
    e.article_id,
    e.viewed_at,
    a.category,
    a.region,
    ROW_NUMBER() OVER (
      PARTITION BY e.user_id ORDER BY e.viewed_at DESC, e.article_id DESC
    ) AS recency
  FROM events AS e
  JOIN articles AS a ON a.article_id = e.article_id
)
SELECT
  user_id,
  -- Aggregate ARRAY_AGG can take ORDER BY; the same unique key keeps the arrays parallel.
  ARRAY_AGG(article_id ORDER BY recency) AS history,
  ARRAY_AGG(category ORDER BY recency) AS history_category,
  ARRAY_AGG(region ORDER BY recency) AS history_region,
  MAX(viewed_at) AS last_viewed_at
FROM ranked
WHERE recency <= @history_length
GROUP BY user_id
