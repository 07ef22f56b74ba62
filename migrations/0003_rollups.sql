-- The read model: pre-aggregated counts per site, bucket and dimension value,
-- so a report reads a few rows per day instead of every event.

-- Whether an event is the first of its kind in its visit: the first view of
-- its page, or the first custom event of its name. A page's "visits" are
-- the first views in range, which add up across days.
ALTER TABLE events ADD COLUMN first_view INTEGER NOT NULL DEFAULT 0;
UPDATE events SET first_view = 1
WHERE name <> 'engagement' AND (site_id, ts, id) IN (
    SELECT site_id, ts, id FROM (
        SELECT site_id, ts, id, ROW_NUMBER() OVER (
            PARTITION BY visit_id, name, CASE WHEN name = 'pageview' THEN path END
            ORDER BY ts, id) AS n
        FROM events WHERE name <> 'engagement')
    WHERE n = 1);

-- A visit is added to the rollups once it has ended and can no longer
-- change; until then reports read it from this table.
ALTER TABLE visits ADD COLUMN rolled INTEGER NOT NULL DEFAULT 0;
CREATE INDEX visits_unrolled ON visits (site_id, started_at) WHERE rolled = 0;

-- grain: 0 = local hour (totals only), 1 = local day, 2 = local month.
-- bucket: Unix second the bucket starts at.
-- dim: 0 = totals, 1 = page, 2 = custom event name, 3 = property
--      ("key" U+001F "value"), 10 + n = the n-th visit attribute (see
--      `VISIT_COLUMNS`). value: '' for totals and for a missing attribute.
-- pageviews, events and visitors count events by their time; visits,
-- bounces and duration count ended visits by their start; for a page or an
-- event name, visits counts first views. visitors is a `VisitorSketch`,
-- last so that reading the counts never touches its overflow pages.
CREATE TABLE rollups (
    site_id   INTEGER NOT NULL,
    grain     INTEGER NOT NULL,
    dim       INTEGER NOT NULL,
    bucket    INTEGER NOT NULL,
    value     TEXT    NOT NULL,
    visits    INTEGER NOT NULL DEFAULT 0,
    pageviews INTEGER NOT NULL DEFAULT 0,
    events    INTEGER NOT NULL DEFAULT 0,
    bounces   INTEGER NOT NULL DEFAULT 0,
    duration  INTEGER NOT NULL DEFAULT 0,
    visitors  BLOB,
    PRIMARY KEY (site_id, grain, dim, bucket, value)
) WITHOUT ROWID;

-- Rollups are built from the tables above at the next start.
INSERT INTO meta (key, value) VALUES ('rollups_rebuild', 'all')
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
