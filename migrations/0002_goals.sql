-- Goals: a custom event name or a page path (with * wildcards) that counts
-- as a conversion.
CREATE TABLE goals (
    id          INTEGER PRIMARY KEY,
    site_id     INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    event_name  TEXT,
    page_path   TEXT,
    created_at  INTEGER NOT NULL,
    CHECK ((event_name IS NULL) <> (page_path IS NULL)),
    UNIQUE (site_id, event_name, page_path)
);
