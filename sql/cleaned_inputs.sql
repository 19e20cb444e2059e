-- The cleaning steps every query starts from, included where a query says {{cleaned_inputs}}:
--   articles      one row per article id, missing attributes as '__missing__', with its lifetime
--                 (created_at, removed_at) and status
--   valid_events  events with ids and times, exact duplicates collapsed, unknown articles dropped,
--                 events from the future (after @not_after: the run's wall clock + the allowed
--                 clock skew) dropped
--   cutoff        as_of: @as_of, or the latest valid event (never the wall clock, never after it)
--   events        valid events up to as_of (and within @lookback_days of it, when given)
-- Kept in one file so the four queries cannot drift apart; sql.render_query splices it in.
articles AS (
  -- One row per article id; a duplicated id keeps its most recently created row. Missing or
  -- empty attributes become '__missing__' (features.MISSING_ATTRIBUTE) so vocabularies stay dense
  -- and '' stays free for padding.
  SELECT article_id, title, category, region, created_at, status, removed_at
  FROM (
    SELECT
      article_id,
      title,
      COALESCE(NULLIF(category, ''), '__missing__') AS category,
      COALESCE(NULLIF(region, ''), '__missing__') AS region,
      created_at,
      status,
      removed_at,
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
  -- (same user, article and viewed_at), drops events of articles the articles table lacks, and
  -- events dated after @not_after (they cannot have happened yet: a wrong clock or bad data).
  SELECT DISTINCT e.user_id, e.article_id, e.viewed_at
  FROM {{events}} AS e
  JOIN articles AS a ON a.article_id = e.article_id
  WHERE e.user_id IS NOT NULL AND e.user_id != '' AND e.viewed_at IS NOT NULL
    AND e.viewed_at <= @not_after
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
)
