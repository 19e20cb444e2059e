-- The exposure log of `candidates serve --experiment` in BigQuery (docs/experiments.md).
--
-- Not run by the extract stage: a statement for the experiment's owner. The table matches the
-- Parquet files of serving/experiments/exposures.py column for column; load them with
--
--   bq load --source_format=PARQUET --parquet_enable_list_inference \
--     --time_partitioning_field=served_at --clustering_fields=experiment,arm \
--     PROJECT:DATASET.exposures 'gs://BUCKET/exposures/exposures-*.parquet'
--
-- (list inference makes `candidates` a REPEATED RECORD instead of Parquet's list/element nesting).
-- Or create the table first, with this statement, and load into it.

CREATE TABLE IF NOT EXISTS `PROJECT.DATASET.exposures` (
  request_id STRING NOT NULL,      -- X-Request-ID when the client sent a valid one, else a random id
  experiment STRING NOT NULL,      -- the experiment file's name
  user_id STRING NOT NULL,
  arm STRING NOT NULL,
  overridden BOOL NOT NULL,        -- chosen with ?arm= (debugging): leave these out of any analysis
  share FLOAT64 NOT NULL,          -- the arm's configured share of users
  model_version STRING NOT NULL,   -- the version that answered (popularity arm: whose popular list)
  fallback BOOL NOT NULL,          -- the answer was the popular list
  served_at TIMESTAMP NOT NULL,
  candidates ARRAY<STRUCT<rank INT64, article_id STRING>>  -- the first exposure_top_n, rank 1 first
)
PARTITION BY DATE(served_at)
CLUSTER BY experiment, arm;

-- Attributed views per arm, as `candidates experiment report` counts them: a view of a listing the
-- user was shown at most @window_hours before it; users in more than one arm and ?arm= answers left out.
--
-- WITH exposed AS (
--   SELECT user_id, arm, served_at, c.article_id
--   FROM `PROJECT.DATASET.exposures`, UNNEST(candidates) AS c
--   WHERE experiment = @experiment AND NOT overridden
-- ),
-- one_arm AS (
--   SELECT user_id, ANY_VALUE(arm) AS arm FROM exposed GROUP BY user_id HAVING COUNT(DISTINCT arm) = 1
-- ),
-- attributed AS (
--   SELECT DISTINCT v.user_id, v.article_id, v.viewed_at
--   FROM `PROJECT.DATASET.events` AS v
--   JOIN exposed AS e
--     ON e.user_id = v.user_id AND e.article_id = v.article_id
--    AND v.viewed_at BETWEEN e.served_at AND TIMESTAMP_ADD(e.served_at, INTERVAL @window_hours HOUR)
-- )
-- SELECT u.arm, COUNT(DISTINCT u.user_id) AS users, COUNT(a.user_id) AS views,
--        COUNT(a.user_id) / COUNT(DISTINCT u.user_id) AS views_per_user
-- FROM one_arm AS u LEFT JOIN attributed AS a USING (user_id)
-- GROUP BY u.arm ORDER BY u.arm;
