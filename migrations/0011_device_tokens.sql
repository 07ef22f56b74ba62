-- Browsers that signed in to an account: a sign-in attempt showing one of
-- these tokens for its account is limited per token, not per account, so
-- strangers guessing from many networks cannot keep the owner out. Kept in
-- the database so that the exemption survives a restart; only the hash of
-- the cookie's random token is stored, as for login sessions.
CREATE TABLE device_tokens (
    token_hash   BLOB    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX device_tokens_user ON device_tokens (user_id, last_used_at);
