-- Initial schema, SQLite flavour. migrations/postgres/0001_initial.sql holds
-- the same tables; the differences are column types (INTEGER/BLOB here,
-- BIGINT/BYTEA and "C" collation there) and how offline ids are generated.
-- Tables other than credentials deliberately have no foreign key to accounts:
-- every method must work for a name with no rows, and delete_account removes
-- each table's rows explicitly.

CREATE TABLE accounts (
    username   TEXT PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL
);

-- One row per SCRAM hash ('SHA-1', 'SHA-256').
CREATE TABLE credentials (
    username   TEXT NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    hash       TEXT NOT NULL,
    salt       BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (username, hash)
) WITHOUT ROWID;

-- Per-account counters (the roster version of XEP-0237). Write transactions
-- that must serialize per account upsert this row first, which locks it.
CREATE TABLE account_state (
    username       TEXT PRIMARY KEY NOT NULL,
    roster_version INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE roster_items (
    username     TEXT NOT NULL,
    contact      TEXT NOT NULL,
    name         TEXT,
    subscription TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask          INTEGER NOT NULL CHECK (ask IN (0, 1)),
    approved     INTEGER NOT NULL CHECK (approved IN (0, 1)),
    PRIMARY KEY (username, contact)
) WITHOUT ROWID;

CREATE TABLE roster_groups (
    username TEXT NOT NULL,
    contact  TEXT NOT NULL,
    name     TEXT NOT NULL,
    PRIMARY KEY (username, contact, name),
    FOREIGN KEY (username, contact) REFERENCES roster_items (username, contact) ON DELETE CASCADE
) WITHOUT ROWID;

-- Inbound subscription requests not answered yet; contact is the requester.
CREATE TABLE pending_subscriptions (
    username TEXT NOT NULL,
    contact  TEXT NOT NULL,
    stanza   TEXT NOT NULL,
    PRIMARY KEY (username, contact)
) WITHOUT ROWID;

-- AUTOINCREMENT so that ids of deleted messages are never handed out again.
CREATE TABLE offline_messages (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    username  TEXT NOT NULL,
    stanza    TEXT NOT NULL,
    stored_at INTEGER NOT NULL
);
CREATE INDEX offline_messages_by_username ON offline_messages (username, id);

CREATE TABLE vcards (
    username TEXT PRIMARY KEY NOT NULL,
    vcard    TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE private_xml (
    username  TEXT NOT NULL,
    namespace TEXT NOT NULL,
    xml       TEXT NOT NULL,
    PRIMARY KEY (username, namespace)
) WITHOUT ROWID;

CREATE TABLE blocklist (
    username TEXT NOT NULL,
    jid      TEXT NOT NULL,
    PRIMARY KEY (username, jid)
) WITHOUT ROWID;

CREATE TABLE last_activity (
    username TEXT PRIMARY KEY NOT NULL,
    at       INTEGER NOT NULL,
    status   TEXT NOT NULL
) WITHOUT ROWID;
