-- Input report: one row of counts describing the inputs and each cleaning step, for
-- extract_summary.json and the log. Empty inputs are refused on these counts.
--
-- Parameters:
--   @as_of                 TIMESTAMP  cut-off; NULL = the latest valid event (never the wall clock)
--   @lookback_days         INT64      ignore views older than as_of - N days; NULL = keep all
--   @max_article_age_days  INT64      NULL = no age limit
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
raw_events AS (
  SELECT user_id, article_id, viewed_at FROM {{events}}
),
complete_events AS (
  SELECT user_id, article_id, viewed_at
  FROM raw_events
  WHERE user_id IS NOT NULL AND user_id != ''
    AND article_id IS NOT NULL AND article_id != ''
    AND viewed_at IS NOT NULL
),
distinct_events AS (
  SELECT DISTINCT user_id, article_id, viewed_at FROM complete_events
),
raw_articles AS (
  SELECT article_id, created_at, status FROM {{articles}}
)
SELECT
  (SELECT as_of FROM cutoff) AS as_of,
  (SELECT MIN(viewed_at) FROM events) AS first_viewed_at,
  (SELECT COUNT(*) FROM raw_events) AS events_rows,
  (SELECT COUNT(*) FROM raw_events) - (SELECT COUNT(*) FROM complete_events) AS events_missing_ids,
  (SELECT COUNT(*) FROM complete_events) - (SELECT COUNT(*) FROM distinct_events) AS events_duplicates,
  (SELECT COUNT(*) FROM distinct_events) - (SELECT COUNT(*) FROM valid_events) AS events_unknown_article,
  (SELECT COUNTIF(v.viewed_at > c.as_of) FROM valid_events AS v CROSS JOIN cutoff AS c) AS events_after_as_of,
  (SELECT COUNT(*) FROM valid_events) - (SELECT COUNT(*) FROM events)
    - (SELECT COUNTIF(v.viewed_at > c.as_of) FROM valid_events AS v CROSS JOIN cutoff AS c) AS events_before_lookback,
  (SELECT COUNT(*) FROM events) AS events_used,
  (SELECT COUNT(DISTINCT user_id) FROM events) AS users,
  (SELECT COUNT(DISTINCT article_id) FROM events) AS articles_viewed,
  (SELECT COUNT(*) FROM raw_articles) AS articles_rows,
  (SELECT COUNTIF(article_id IS NULL OR article_id = '') FROM raw_articles) AS articles_missing_ids,
  (SELECT COUNTIF(article_id IS NOT NULL AND article_id != '') FROM raw_articles)
    - (SELECT COUNT(*) FROM articles) AS articles_duplicate_ids,
  (SELECT COUNTIF(status IS NOT NULL AND LOWER(TRIM(status)) != 'active') FROM articles) AS articles_inactive,
  (SELECT COUNTIF(a.created_at < TIMESTAMP_SUB(c.as_of, INTERVAL @max_article_age_days DAY)
      AND (a.status IS NULL OR LOWER(TRIM(a.status)) = 'active'))
    FROM articles AS a CROSS JOIN cutoff AS c) AS articles_too_old
