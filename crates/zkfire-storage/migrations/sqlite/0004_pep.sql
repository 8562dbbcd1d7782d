-- Personal Eventing Protocol (XEP-0163): each account's pubsub nodes, with
-- their configuration (kept as the module writes it), and their items in
-- the order published (`seq`: a republished id moves to the end).
CREATE TABLE pep_nodes (
    username TEXT NOT NULL,
    node     TEXT NOT NULL,
    config   TEXT NOT NULL,
    PRIMARY KEY (username, node)
) WITHOUT ROWID;

CREATE TABLE pep_items (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    username  TEXT NOT NULL,
    node      TEXT NOT NULL,
    item_id   TEXT NOT NULL,
    payload   TEXT NOT NULL,
    published INTEGER NOT NULL,  -- milliseconds since the Unix epoch
    UNIQUE (username, node, item_id)
);
CREATE INDEX pep_items_by_node ON pep_items (username, node, seq);

-- What a client's entity capabilities (XEP-0115) stand for, learnt once per
-- verification string and shared by every node.
CREATE TABLE caps_features (
    ver      TEXT PRIMARY KEY NOT NULL,
    features TEXT NOT NULL       -- one per line
) WITHOUT ROWID;
