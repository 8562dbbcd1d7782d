-- Message archives (XEP-0313). `id` is the archive id given to clients as
-- the stanza-id (XEP-0359): time-ordered text, so ORDER BY id is the order
-- of arrival and every page query is a range on (username, id). A rowid
-- table, not WITHOUT ROWID: its rows are whole stanzas, which would make
-- every index entry of the primary key as large as a message; here new
-- rows go to the end of the table and the indexes stay narrow.
CREATE TABLE archive (
    seq       INTEGER PRIMARY KEY,
    username  TEXT NOT NULL,
    id        TEXT NOT NULL,
    ts        INTEGER NOT NULL,  -- milliseconds since the Unix epoch
    with_bare TEXT NOT NULL,     -- the other party, bare JID
    with_full TEXT NOT NULL,     -- and as it was addressed (full if it was)
    stanza    TEXT NOT NULL,
    UNIQUE (username, id)
);
CREATE INDEX archive_by_with ON archive (username, with_bare, id);
-- For the retention purge, which deletes by age across accounts.
CREATE INDEX archive_by_ts ON archive (ts);

-- Archiving preferences; an account without a row uses the server default.
CREATE TABLE archive_prefs (
    username       TEXT PRIMARY KEY NOT NULL,
    default_policy TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE archive_prefs_jids (
    username TEXT NOT NULL,
    jid      TEXT NOT NULL,
    always   INTEGER NOT NULL,   -- 1: always archived, 0: never
    PRIMARY KEY (username, jid)
) WITHOUT ROWID;
