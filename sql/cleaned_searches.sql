-- The searches cleaning steps, included where a search query says {{cleaned_searches}} (after
-- {{cleaned_inputs}}, whose cutoff it uses):
--   complete_searches  rows with a user id, a time and a query that is not blank, the query cut to
--                      @query_max_chars characters (features.QUERY_MAX_CHARS)
--   searches           distinct complete searches up to as_of (and not after @not_after)
complete_searches AS (
  SELECT
    s.user_id,
    SUBSTR(TRIM(s.query), 1, @query_max_chars) AS query,
    s.searched_at
  FROM {{searches}} AS s
  WHERE s.user_id IS NOT NULL AND s.user_id != '' AND s.searched_at IS NOT NULL
    AND s.query IS NOT NULL AND TRIM(s.query) != ''
),
searches AS (
  SELECT DISTINCT s.user_id, s.query, s.searched_at
  FROM complete_searches AS s
  CROSS JOIN cutoff AS c
  WHERE s.searched_at <= c.as_of AND s.searched_at <= @not_after
)
