-- User histories: each user's latest @history_length views, most recent first (the serving
-- snapshot read by the online history store).
--
-- Columns (homefeed.features.USER_HISTORY_COLUMNS):
--   user_id, history, history_category, history_region (parallel arrays), last_viewed_at,
--   seen  every article the user viewed, each once, most recently viewed first, at most
--         @seen_length (features.SEEN): the service's "already viewed" filter, the same set
--         evaluation excludes
--
-- Parameters:
--   @as_of                 TIMESTAMP  cut-off; NULL = the latest valid event (never the wall clock)
--   @history_length        INT64      H, the most recent views kept (>= 1)
--   @seen_length           INT64      the most recently viewed articles kept in `seen`
--   @lookback_days         INT64      ignore views older than as_of - N days; NULL = keep all
--
-- The two double-brace placeholders below are replaced by relations over the input tables with
-- exactly the contract columns (absent optional article columns appear as NULL); table names
-- cannot be query parameters, see sql/__init__.py.
--
-- {{cleaned_inputs}} is sql/cleaned_inputs.sql: the cleaning steps shared by every query
-- (CTEs articles, valid_events, cutoff, events).
WITH
{{cleaned_inputs}},
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
),
latest_views AS (
  -- Each (user, article) once, at its most recent view.
  SELECT user_id, article_id, MIN(recency) AS recency
  FROM ranked
  GROUP BY user_id, article_id
),
seen_sets AS (
  SELECT user_id, ARRAY_AGG(article_id ORDER BY recency) AS seen
  FROM (
    SELECT user_id, article_id, recency,
      ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY recency) AS seen_rank
    FROM latest_views
  ) AS numbered_views
  WHERE seen_rank <= @seen_length
  GROUP BY user_id
),
histories AS (
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
)
SELECT h.user_id, h.history, h.history_category, h.history_region, h.last_viewed_at, s.seen
FROM histories AS h
JOIN seen_sets AS s ON s.user_id = h.user_id
