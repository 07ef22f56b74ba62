-- Roles per site, and share links kept only as hashes.

-- A member's role at a site: `viewer` sees the dashboard, `editor` also
-- changes goals, excluded traffic and the timezone, `owner` also makes the
-- site public, manages share links and members, and removes the site.
-- Before roles, every member could do all of that, so every existing
-- membership becomes `owner`: nobody loses a right by upgrading.
ALTER TABLE site_members ADD COLUMN role TEXT NOT NULL DEFAULT 'owner'
    CHECK (role IN ('viewer', 'editor', 'owner'));

-- Share links were stored with their token, so a copy of the database
-- opened every shared dashboard. Now only the token's BLAKE3 hash is kept
-- (as for login sessions), with its first four characters as a hint that
-- tells links apart; the full link is shown once, when it is created.
-- Existing tokens are hashed here by `tally_token_hash`, a function the
-- migration runner registers for this purpose, so old links keep working.
CREATE TABLE share_links_hashed (
    id          INTEGER PRIMARY KEY,
    site_id     INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    token_hash  BLOB    NOT NULL UNIQUE,
    hint        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
INSERT INTO share_links_hashed (id, site_id, name, token_hash, hint, created_at)
    SELECT id, site_id, name, tally_token_hash(token), substr(token, 1, 4), created_at
      FROM share_links;
DROP TABLE share_links;
ALTER TABLE share_links_hashed RENAME TO share_links;
CREATE INDEX share_links_site ON share_links (site_id);
