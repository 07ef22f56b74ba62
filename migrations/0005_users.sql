-- Dashboard users, their login sessions, which sites they see, and share links.

-- An admin sees every site; any other user sees the sites granted in
-- `site_members`. Passwords are kept only as Argon2id PHC strings.
CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    email           TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash   TEXT    NOT NULL,
    admin           INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);

CREATE TABLE site_members (
    site_id     INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (site_id, user_id)
) WITHOUT ROWID;

-- Server-side login sessions. The cookie holds a random token; only its hash
-- is stored, so a copy of the database opens no session.
CREATE TABLE login_sessions (
    token_hash  BLOB    PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX login_sessions_user ON login_sessions (user_id);

-- Read-only links to one site's dashboard. The token is shown in the site's
-- settings for copying, so it is kept as is; deleting the row revokes it.
CREATE TABLE share_links (
    id          INTEGER PRIMARY KEY,
    site_id     INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    token       TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE INDEX share_links_site ON share_links (site_id);

-- Traffic a site's owner does not want counted: client addresses or
-- networks (one per line, CIDR or a single address), and page paths (one
-- pattern per line; `*` within a segment, `**` across segments). Checked at
-- ingest, before anything is derived from the address.
ALTER TABLE sites ADD COLUMN excluded_ips TEXT NOT NULL DEFAULT '';
ALTER TABLE sites ADD COLUMN excluded_paths TEXT NOT NULL DEFAULT '';
