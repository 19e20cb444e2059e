-- Each user's latest @search_length queries up to as_of, most recent first: the search part of
-- the serving snapshot. Users who searched but viewed nothing are here too (the extract adds them
-- to user_histories with an empty history).
--
-- Columns: user_id, recent_queries ARRAY<STRING>, last_searched_at TIMESTAMP
--
-- {{cleaned_inputs}} is sql/cleaned_inputs.sql, {{cleaned_searches}} sql/cleaned_searches.sql.
WITH
{{cleaned_inputs}},
{{cleaned_searches}},
ranked AS (
  SELECT
    user_id,
    query,
    searched_at,
    ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY searched_at DESC, query DESC) AS recency
  FROM searches
)
SELECT
  user_id,
  ARRAY_AGG(query ORDER BY recency) AS recent_queries,
  MAX(searched_at) AS last_searched_at
FROM ranked
WHERE recency <= @search_length
GROUP BY user_id
