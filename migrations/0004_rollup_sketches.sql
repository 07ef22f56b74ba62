-- Visitor sketches move out of `rollups` into a table of their own. In a
-- WITHOUT ROWID table the first kilobyte of a large blob stays in the row,
-- so a busy site's count rows were a kilobyte each and a breakdown's first
-- pass (counts only) read twenty times the pages it needed. And a seek in
-- such a table copies whole 16 KiB records out of their overflow pages to
-- compare keys. So sketches live in a rowid table, found through an index
-- of small entries: same key and meaning (a row without visitors has no
-- sketch row), ordered by value before bucket, since a breakdown reads the
-- sketches of a few values over a range of buckets.
CREATE TABLE rollup_sketches (
    site_id   INTEGER NOT NULL,
    grain     INTEGER NOT NULL,
    dim       INTEGER NOT NULL,
    bucket    INTEGER NOT NULL,
    value     TEXT    NOT NULL,
    -- The row's visits + pageviews + events when the sketch was written:
    -- it grows with every change to the sketch, so a copy of the sketch
    -- kept in memory is known to be current when the versions match.
    version   INTEGER NOT NULL,
    visitors  BLOB    NOT NULL,
    UNIQUE (site_id, grain, dim, value, bucket)
);

INSERT INTO rollup_sketches (site_id, grain, dim, bucket, value, version, visitors)
    SELECT site_id, grain, dim, bucket, value, visits + pageviews + events, visitors
    FROM rollups
    WHERE visitors IS NOT NULL
    ORDER BY site_id, grain, dim, value, bucket;

CREATE TABLE rollup_counts (
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
    -- This row's own distinct visitors, counted from its sketch whenever
    -- the sketch changes: a series of days reads one number per day.
    visitors  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, grain, dim, bucket, value)
) WITHOUT ROWID;

INSERT INTO rollup_counts (site_id, grain, dim, bucket, value, visits, pageviews, events,
        bounces, duration)
    SELECT site_id, grain, dim, bucket, value, visits, pageviews, events, bounces, duration
    FROM rollups;

DROP TABLE rollups;
ALTER TABLE rollup_counts RENAME TO rollups;

-- Week rows (grain 3: local weeks from Monday) are new: a 30-day report
-- reads four weeks and a few days instead of thirty days. They, and each
-- row's visitors, are built with everything else by a rebuild at the next
-- start.
INSERT INTO meta (key, value) VALUES ('rollups_rebuild', 'all')
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
