-- Searches report: row counts of the searches table and of its cleaning steps, for
-- extract_summary.json (dropped.searches_*, excluded.searches_*) and the log.
--
-- {{cleaned_inputs}} is sql/cleaned_inputs.sql, {{cleaned_searches}} sql/cleaned_searches.sql.
WITH
{{cleaned_inputs}},
{{cleaned_searches}},
raw_searches AS (
  SELECT user_id, query, searched_at FROM {{searches}}
)
SELECT
  (SELECT COUNT(*) FROM raw_searches) AS searches_rows,
  (SELECT COUNTIF(user_id IS NULL OR user_id = '' OR searched_at IS NULL) FROM raw_searches)
    AS searches_missing_ids,
  (SELECT COUNTIF(user_id IS NOT NULL AND user_id != '' AND searched_at IS NOT NULL
     AND (query IS NULL OR TRIM(query) = '')) FROM raw_searches) AS searches_empty_query,
  (SELECT COUNTIF(user_id IS NOT NULL AND user_id != '' AND searched_at IS NOT NULL
     AND LENGTH(TRIM(query)) > @query_max_chars) FROM raw_searches) AS searches_truncated,
  (SELECT COUNT(*) FROM complete_searches)
    - (SELECT COUNT(*) FROM (SELECT DISTINCT user_id, query, searched_at FROM complete_searches))
    AS searches_duplicates,
  (SELECT COUNT(*) FROM (SELECT DISTINCT user_id, query, searched_at FROM complete_searches))
    - (SELECT COUNT(*) FROM searches) AS searches_after_as_of,
  (SELECT COUNT(*) FROM searches) AS searches_used,
  (SELECT COUNT(DISTINCT user_id) FROM searches) AS search_users
