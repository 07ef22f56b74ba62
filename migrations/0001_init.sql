-- Sites, API keys, visitor-id salts, visits and events.
-- Timestamps are Unix seconds (UTC). No IP address or raw User-Agent is ever stored.

CREATE TABLE sites (
    id          INTEGER PRIMARY KEY,
    domain      TEXT    NOT NULL UNIQUE,
    timezone    TEXT    NOT NULL DEFAULT 'UTC',
    public      INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

-- Only a hash of each key is kept; `prefix` lets an operator tell keys apart.
CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    prefix      TEXT    NOT NULL,
    key_hash    BLOB    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- One random salt per UTC day (days since 1970-01-01); deleted after 48 hours.
CREATE TABLE salts (
    day         INTEGER PRIMARY KEY,
    salt        BLOB    NOT NULL
);

-- A visit (session): events of one visitor with no gap of 30 minutes or more.
-- Derived from `events`: rows are written in batches every second, and after
-- an unclean stop the visits of the last events are rebuilt from them.
-- `seq` orders snapshots of the same visit so a late write never overwrites a newer one.
CREATE TABLE visits (
    id              INTEGER PRIMARY KEY,
    site_id         INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    visitor_id      INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    started_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    entry_page      TEXT,
    exit_page       TEXT,
    pageviews       INTEGER NOT NULL,
    events          INTEGER NOT NULL,
    interactive     INTEGER NOT NULL,
    is_bounce       INTEGER NOT NULL,
    referrer        TEXT,
    source          TEXT,
    utm_medium      TEXT,
    utm_source      TEXT,
    utm_campaign    TEXT,
    utm_term        TEXT,
    utm_content     TEXT,
    country         TEXT,
    region          TEXT,
    city            TEXT,
    browser         TEXT,
    browser_version TEXT,
    os              TEXT,
    os_version      TEXT,
    device          TEXT
);
-- Visit ids grow with time, so this index and the table itself are appended
-- to; an index on last_seen_at would be rewritten by every event instead.
CREATE INDEX visits_site_started ON visits (site_id, started_at);

-- Clustered by site and time: each group commit appends to one B-tree (no
-- secondary index to update), and every query reads a contiguous range.
-- `id` (from the writer, increasing) orders events within a second.
CREATE TABLE events (
    site_id          INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    ts               INTEGER NOT NULL,
    id               INTEGER NOT NULL,
    visit_id         INTEGER NOT NULL,
    visitor_id       INTEGER NOT NULL,
    name             TEXT    NOT NULL,
    hostname         TEXT    NOT NULL,
    path             TEXT    NOT NULL,
    props            TEXT,
    revenue_amount   TEXT,
    revenue_currency TEXT,
    scroll_depth     INTEGER,
    engaged_ms       INTEGER,
    interactive      INTEGER NOT NULL DEFAULT 1,
    -- The first event of a visit carries the visit's attributes, so a visit
    -- can be rebuilt from events alone; on every other event they are NULL.
    first_of_visit   INTEGER NOT NULL DEFAULT 0,
    referrer         TEXT,
    source           TEXT,
    utm_medium       TEXT,
    utm_source       TEXT,
    utm_campaign     TEXT,
    utm_term         TEXT,
    utm_content      TEXT,
    country          TEXT,
    region           TEXT,
    city             TEXT,
    browser          TEXT,
    browser_version  TEXT,
    os               TEXT,
    os_version       TEXT,
    device           TEXT,
    PRIMARY KEY (site_id, ts, id)
) WITHOUT ROWID;

-- Whether the server stopped cleanly (visits fully written) or must rebuild.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
