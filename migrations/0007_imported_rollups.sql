-- Aggregates imported from another tool's export (Plausible's CSV files):
-- numbers per local day and dimension value, with no raw events behind
-- them. They are added to the rollups at import, and again whenever the
-- rollups are rebuilt from the raw tables.
CREATE TABLE imported_rollups (
    site_id   INTEGER NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    -- Local day, YYYY-MM-DD.
    day       TEXT    NOT NULL,
    dim       INTEGER NOT NULL,
    value     TEXT    NOT NULL,
    visitors  INTEGER NOT NULL DEFAULT 0,
    visits    INTEGER NOT NULL DEFAULT 0,
    pageviews INTEGER NOT NULL DEFAULT 0,
    events    INTEGER NOT NULL DEFAULT 0,
    bounces   INTEGER NOT NULL DEFAULT 0,
    duration  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, day, dim, value)
) WITHOUT ROWID;
