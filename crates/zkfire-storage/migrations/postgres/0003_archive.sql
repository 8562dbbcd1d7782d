-- Message archives (XEP-0313). `id` is the archive id given to clients as
-- the stanza-id (XEP-0359): time-ordered text, so ORDER BY id is the order
-- of arrival and every page query is a range on (username, id).
CREATE TABLE archive (
    username  TEXT COLLATE "C" NOT NULL,
    id        TEXT COLLATE "C" NOT NULL,
    ts        BIGINT NOT NULL,   -- milliseconds since the Unix epoch
    with_bare TEXT COLLATE "C" NOT NULL,  -- the other party, bare JID
    with_full TEXT COLLATE "C" NOT NULL,  -- and as it was addressed
    stanza    TEXT NOT NULL,
    PRIMARY KEY (username, id)
);
CREATE INDEX archive_by_with ON archive (username, with_bare, id);
-- For the retention purge, which deletes by age across accounts.
CREATE INDEX archive_by_ts ON archive (ts);

-- Archiving preferences; an account without a row uses the server default.
CREATE TABLE archive_prefs (
    username       TEXT COLLATE "C" PRIMARY KEY,
    default_policy TEXT NOT NULL
);

CREATE TABLE archive_prefs_jids (
    username TEXT COLLATE "C" NOT NULL,
    jid      TEXT COLLATE "C" NOT NULL,
    always   INTEGER NOT NULL,   -- 1: always archived, 0: never
    PRIMARY KEY (username, jid)
);
