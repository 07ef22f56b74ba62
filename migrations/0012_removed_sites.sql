-- Removing a site deletes its rows afterwards, a batch per writer
-- transaction (`store::removed`), so ingest of other sites never waits
-- behind one long delete. The bulky tables therefore no longer cascade from
-- `sites`: a cascade would delete every row of the site in the transaction
-- that removes its row. (Goals, members, share links, summaries and rollup
-- rebuilds still do: a site has few of those.)
--
-- Only the constraint goes; the tables' rows and format stay as they are,
-- so their stored definitions are edited in place, SQLite's documented way
-- to drop a FOREIGN KEY constraint without copying a table. The table
-- created below changes the schema version, so every connection reads the
-- edited definitions again. `store::migrate` checks afterwards that the
-- three tables have no foreign key left, and fails the migration otherwise.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, ' REFERENCES sites(id) ON DELETE CASCADE', '')
 WHERE type = 'table' AND name IN ('events', 'visits');
UPDATE sqlite_schema
   SET sql = replace(sql, ' REFERENCES sites (id) ON DELETE CASCADE', '')
 WHERE type = 'table' AND name = 'imported_rollups';
PRAGMA writable_schema = RESET;

-- Sites removed, whose rows the passes delete. An entry is kept for good:
-- rows may still land after the last went (events accepted just before the
-- removal, a journal replayed at a later start).
CREATE TABLE removed_sites (
    site_id     INTEGER PRIMARY KEY,
    removed_at  INTEGER NOT NULL
);
