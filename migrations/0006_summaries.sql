-- Weekly summaries: the plain-language text of a site's week, written once
-- per local week (Monday to Sunday) and kept as long as aggregates.
CREATE TABLE summaries (
    site_id     INTEGER NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    -- The week's Monday in the site's timezone, YYYY-MM-DD.
    week_start  TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    -- When it was e-mailed to the site's users, or why that failed.
    emailed_at  INTEGER,
    email_error TEXT,
    PRIMARY KEY (site_id, week_start)
) WITHOUT ROWID;
