-- Rebuilds of a site's rollups after its timezone changed, in progress.
-- They run in the background in short writer transactions; this row is
-- their progress, so a restart resumes where the last step stopped.
CREATE TABLE rollup_rebuilds (
    site_id      INTEGER PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    -- The timezone the rows kept as they were are cut in, and the instant
    -- raw events are complete from when some rows are kept (older raw
    -- events were deleted by retention; only their rollups are left).
    -- NULL: nothing is kept, the raw events cover the site's whole history.
    old_timezone TEXT    NOT NULL,
    kept_before  INTEGER,
    -- Events with an id up to this are the rebuild's to fold, later ones
    -- the live feed's, already in the new timezone.
    cutoff       INTEGER NOT NULL,
    -- When the timezone changed (Unix seconds).
    changed_at   INTEGER NOT NULL,
    -- 0: deleting the old rows, 1: folding events, 2: adding the visits
    -- rolled before the change, 3: adding imported aggregates.
    phase        INTEGER NOT NULL DEFAULT 0,
    -- Where the phase goes on: a (grain, dimension) number, an event's or
    -- visit's (time, id), or a day number.
    next_ts      INTEGER NOT NULL DEFAULT 0,
    next_id      INTEGER NOT NULL DEFAULT 0
);
