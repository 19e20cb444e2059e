-- Input report: one row of counts describing the inputs and each cleaning step, for
-- extract_summary.json and the log. Empty inputs are refused on these counts.
--
-- Parameters:
--   @as_of                 TIMESTAMP  cut-off; NULL = the latest valid event (never the wall clock)
--   @lookback_days         INT64      ignore views older than as_of - N days; NULL = keep all
--   @max_article_age_days  INT64      NULL = no age limit
--   @not_after             TIMESTAMP  events after this are from the future: counted and dropped
--
-- The two double-brace placeholders below are replaced by relations over the input tables with
-- exactly the contract columns (absent optional article columns appear as NULL); table names
-- cannot be query parameters, see sql/__init__.py.
--
-- {{cleaned_inputs}} is sql/cleaned_inputs.sql: the cleaning steps shared by every query
-- (CTEs articles, valid_events, cutoff, events).
WITH
{{cleaned_inputs}},
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
future_events AS (
  -- Known articles' events dated after @not_after (valid_events leaves them out).
  SELECT d.user_id FROM distinct_events AS d
  JOIN articles AS a ON a.article_id = d.article_id
  WHERE d.viewed_at > @not_after
),
raw_articles AS (
  SELECT article_id, created_at, status FROM {{articles}}
),
live_at_as_of AS (
  SELECT
    a.article_id,
    (a.created_at IS NULL OR a.created_at <= c.as_of)
      AND (CASE WHEN a.removed_at IS NOT NULL THEN c.as_of < a.removed_at
        ELSE a.status IS NULL OR LOWER(TRIM(a.status)) = 'active' END) AS live
  FROM articles AS a CROSS JOIN cutoff AS c
)
SELECT
  (SELECT as_of FROM cutoff) AS as_of,
  (SELECT MIN(viewed_at) FROM events) AS first_viewed_at,
  (SELECT COUNT(*) FROM raw_events) AS events_rows,
  (SELECT COUNT(*) FROM raw_events) - (SELECT COUNT(*) FROM complete_events) AS events_missing_ids,
  (SELECT COUNT(*) FROM complete_events) - (SELECT COUNT(*) FROM distinct_events) AS events_duplicates,
  (SELECT COUNT(*) FROM distinct_events) - (SELECT COUNT(*) FROM valid_events)
    - (SELECT COUNT(*) FROM future_events) AS events_unknown_article,
  (SELECT COUNT(*) FROM future_events) AS events_in_future,
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
  -- Not live at as_of (the rule of sql/articles.sql): created after it, removed by it, or (no
  -- removed_at) sold or deleted.
  (SELECT COUNTIF(NOT live) FROM live_at_as_of) AS articles_inactive,
  (SELECT COUNTIF(a.created_at < TIMESTAMP_SUB(c.as_of, INTERVAL @max_article_age_days DAY) AND l.live)
    FROM articles AS a JOIN live_at_as_of AS l ON l.article_id = a.article_id CROSS JOIN cutoff AS c) AS articles_too_old,
  (SELECT COUNTIF(removed_at IS NOT NULL) FROM articles) AS articles_with_removed_at
