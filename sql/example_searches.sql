-- Recent queries of each (user, viewed_at) of the views: the user's latest @search_length
-- queries made strictly before viewed_at, most recent first (ties by query text, descending).
-- A query at or after the view never reaches its example. The extract joins these rows onto
-- training_examples.sql's on (user_id, viewed_at); views without earlier queries have no row.
--
-- Columns: user_id, viewed_at, recent_queries ARRAY<STRING>
--
-- Parameters: @as_of, @lookback_days, @not_after (as in training_examples.sql), @search_length
-- (S >= 1), @query_max_chars.
--
-- {{cleaned_inputs}} is sql/cleaned_inputs.sql, {{cleaned_searches}} sql/cleaned_searches.sql.
WITH
{{cleaned_inputs}},
{{cleaned_searches}},
view_times AS (
  SELECT DISTINCT user_id, viewed_at FROM events
),
paired AS (
  SELECT
    v.user_id,
    v.viewed_at,
    s.query,
    ROW_NUMBER() OVER (
      PARTITION BY v.user_id, v.viewed_at ORDER BY s.searched_at DESC, s.query DESC
    ) AS recency
  FROM view_times AS v
  JOIN searches AS s ON s.user_id = v.user_id AND s.searched_at < v.viewed_at
)
SELECT
  user_id,
  viewed_at,
  ARRAY_AGG(query ORDER BY recency) AS recent_queries
FROM paired
WHERE recency <= @search_length
GROUP BY user_id, viewed_at
