-- Training examples: one row per view that has at least one earlier view of the same user.
--
-- Columns (homefeed.features.EXAMPLE_COLUMNS):
--   user_id, label (the article viewed), label_category, label_region,
--   label_title       the label's title ('' when it has none; the transform NFKC-normalises it)
--   label_age_days    (viewed_at - created_at) of the label in days, FLOAT64, never negative;
--                     -1 (features.UNKNOWN_AGE) when the article has no created_at
--   history, history_category, history_region  -- the user's earlier views, most recent first,
--                                                 at most @history_length, three parallel arrays
--   example_age_days  -- (as_of - viewed_at) in days, FLOAT64
--   viewed_at, split  -- homefeed.features.SPLITS, by @split:
--                        'time': 'test' from @test_from on, 'validation' from @validation_from
--                        on, 'train' before it (a global time cut: every later view in a later split)
--                        'per-user': 'test' for each user's last view, 'validation' for the one
--                        before it, 'train' for the others (leave-last-out)
--   position, history_positions  -- 1-based view numbers, for the extract's order check only
--
-- Parameters:
--   @as_of                 TIMESTAMP  cut-off; NULL = the latest valid event (never the wall clock)
--   @history_length        INT64      H, the most recent views kept in a history (>= 1)
--   @lookback_days         INT64      ignore views older than as_of - N days; NULL = keep all
--   @split                 STRING     'time' or 'per-user' (homefeed.config.SPLIT_PROTOCOLS)
--   @validation_from       TIMESTAMP  T_val, the time split's first validation instant
--   @test_from             TIMESTAMP  T_test (>= T_val), its first test instant; the test window
--                                     ends at as_of (views after it are gone already)
--
-- The two double-brace placeholders below are replaced by relations over the input tables with
-- exactly the contract columns (absent optional article columns appear as NULL); table names
-- cannot be query parameters, see sql/__init__.py.
--
-- {{cleaned_inputs}} is sql/cleaned_inputs.sql: the cleaning steps shared by every query
-- (CTEs articles, valid_events, cutoff, events).
WITH
{{cleaned_inputs}},
numbered AS (
  -- Views in time order per user; ties at equal viewed_at are broken by article_id, so the
  -- order (and everything derived from it) is deterministic.
  SELECT
    e.user_id,
    e.article_id,
    e.viewed_at,
    a.category,
    a.region,
    a.title,
    a.created_at,
    ROW_NUMBER() OVER (PARTITION BY e.user_id ORDER BY e.viewed_at, e.article_id) AS position,
    ROW_NUMBER() OVER (
      PARTITION BY e.user_id ORDER BY e.viewed_at DESC, e.article_id DESC
    ) AS position_from_end
  FROM events AS e
  JOIN articles AS a ON a.article_id = e.article_id
),
windowed AS (
  -- The history: the H views before this one, most recent first. Written as the mirror image of
  --   ARRAY_AGG(...) OVER (PARTITION BY user_id ORDER BY viewed_at, article_id
  --                        ROWS BETWEEN H PRECEDING AND 1 PRECEDING)
  -- (the same rows) so that the arrays come out most recent first without a per-row sort. The
  -- frame starts at 1 FOLLOWING (in this descending order: the view just before), so neither the
  -- label nor any later view can leak into the history. GoogleSQL accepts a query parameter as a
  -- frame offset. The arrays share one window, so they stay parallel. (The window is spelled out
  -- four times rather than named in a WINDOW clause: bqemulator cannot bind a parameter there.)
  --
  -- Analytic ARRAY_AGG cannot take its own ORDER BY; BigQuery and DuckDB (the local emulator)
  -- both build the array in window order, but the SQL standard does not promise it. So the
  -- query also returns each view's `position` and its history's positions; the extract checks
  -- them (exactly [position-1, position-2, ...]) and drops the two columns before writing. The
  -- documented-order alternatives (re-sorting each array in an ARRAY(SELECT ... ORDER BY)
  -- subquery, or unnesting and re-aggregating with ARRAY_AGG(... ORDER BY)) give the same rows
  -- but run 10-20 times slower on the emulator.
  SELECT
    n.*,
    ARRAY_AGG(n.article_id) OVER (
      PARTITION BY n.user_id ORDER BY n.viewed_at DESC, n.article_id DESC
      ROWS BETWEEN 1 FOLLOWING AND @history_length FOLLOWING) AS history,
    ARRAY_AGG(n.category) OVER (
      PARTITION BY n.user_id ORDER BY n.viewed_at DESC, n.article_id DESC
      ROWS BETWEEN 1 FOLLOWING AND @history_length FOLLOWING) AS history_category,
    ARRAY_AGG(n.region) OVER (
      PARTITION BY n.user_id ORDER BY n.viewed_at DESC, n.article_id DESC
      ROWS BETWEEN 1 FOLLOWING AND @history_length FOLLOWING) AS history_region,
    ARRAY_AGG(n.position) OVER (
      PARTITION BY n.user_id ORDER BY n.viewed_at DESC, n.article_id DESC
      ROWS BETWEEN 1 FOLLOWING AND @history_length FOLLOWING) AS history_positions
  FROM numbered AS n
)
SELECT
  w.user_id,
  w.article_id AS label,
  w.category AS label_category,
  w.region AS label_region,
  COALESCE(w.title, '') AS label_title,
  CASE
    WHEN w.created_at IS NULL THEN -1.0
    ELSE GREATEST(TIMESTAMP_DIFF(w.viewed_at, w.created_at, MICROSECOND), 0) / 86400000000.0
  END AS label_age_days,
  w.history,
  w.history_category,
  w.history_region,
  TIMESTAMP_DIFF(c.as_of, w.viewed_at, MICROSECOND) / 86400000000.0 AS example_age_days,
  w.viewed_at,
  CASE
    WHEN @split = 'time' THEN
      CASE WHEN w.viewed_at >= @test_from THEN 'test' WHEN w.viewed_at >= @validation_from THEN 'validation' ELSE 'train' END
    ELSE CASE w.position_from_end WHEN 1 THEN 'test' WHEN 2 THEN 'validation' ELSE 'train' END
  END AS split,
  w.position,
  w.history_positions
FROM windowed AS w
CROSS JOIN cutoff AS c
-- "Has an earlier view" is tested on the position, not on the array: an empty frame gives a NULL
-- array in BigQuery, which its API returns as [].
-- With a searches table (@include_first_views), a first view is an example too: the extract keeps
-- it only when queries came before it (a user who searched, then viewed).
WHERE w.position > 1 OR @include_first_views
