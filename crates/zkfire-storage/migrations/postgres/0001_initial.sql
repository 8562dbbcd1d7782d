-- Initial schema, PostgreSQL flavour; see migrations/sqlite/0001_initial.sql
-- for the meaning of each table. Names are TEXT COLLATE "C" so that ORDER BY
-- sorts by bytes, as SQLite does, whatever the database's locale.

CREATE TABLE accounts (
    username   TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE credentials (
    username   TEXT COLLATE "C" NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    hash       TEXT NOT NULL,
    salt       BYTEA NOT NULL,
    iterations BIGINT NOT NULL,
    stored_key BYTEA NOT NULL,
    server_key BYTEA NOT NULL,
    PRIMARY KEY (username, hash)
);

CREATE TABLE account_state (
    username       TEXT COLLATE "C" PRIMARY KEY,
    roster_version BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE roster_items (
    username     TEXT COLLATE "C" NOT NULL,
    contact      TEXT COLLATE "C" NOT NULL,
    name         TEXT,
    subscription TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask          INTEGER NOT NULL CHECK (ask IN (0, 1)),
    approved     INTEGER NOT NULL CHECK (approved IN (0, 1)),
    PRIMARY KEY (username, contact)
);

CREATE TABLE roster_groups (
    username TEXT COLLATE "C" NOT NULL,
    contact  TEXT COLLATE "C" NOT NULL,
    name     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (username, contact, name),
    FOREIGN KEY (username, contact) REFERENCES roster_items (username, contact) ON DELETE CASCADE
);

CREATE TABLE pending_subscriptions (
    username TEXT COLLATE "C" NOT NULL,
    contact  TEXT COLLATE "C" NOT NULL,
    stanza   TEXT NOT NULL,
    PRIMARY KEY (username, contact)
);

CREATE TABLE offline_messages (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username  TEXT COLLATE "C" NOT NULL,
    stanza    TEXT NOT NULL,
    stored_at BIGINT NOT NULL
);
CREATE INDEX offline_messages_by_username ON offline_messages (username, id);

CREATE TABLE vcards (
    username TEXT COLLATE "C" PRIMARY KEY,
    vcard    TEXT NOT NULL
);

CREATE TABLE private_xml (
    username  TEXT COLLATE "C" NOT NULL,
    namespace TEXT COLLATE "C" NOT NULL,
    xml       TEXT NOT NULL,
    PRIMARY KEY (username, namespace)
);

CREATE TABLE blocklist (
    username TEXT COLLATE "C" NOT NULL,
    jid      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (username, jid)
);

CREATE TABLE last_activity (
    username TEXT COLLATE "C" PRIMARY KEY,
    at       BIGINT NOT NULL,
    status   TEXT NOT NULL
);
