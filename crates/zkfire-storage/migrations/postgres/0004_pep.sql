-- Personal Eventing Protocol (XEP-0163): each account's pubsub nodes, with
-- their configuration (kept as the module writes it), and their items in
-- the order published (`seq`: a republished id moves to the end).
CREATE TABLE pep_nodes (
    username TEXT COLLATE "C" NOT NULL,
    node     TEXT COLLATE "C" NOT NULL,
    config   TEXT NOT NULL,
    PRIMARY KEY (username, node)
);

CREATE TABLE pep_items (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username  TEXT COLLATE "C" NOT NULL,
    node      TEXT COLLATE "C" NOT NULL,
    item_id   TEXT COLLATE "C" NOT NULL,
    payload   TEXT NOT NULL,
    published BIGINT NOT NULL,   -- milliseconds since the Unix epoch
    UNIQUE (username, node, item_id)
);
CREATE INDEX pep_items_by_node ON pep_items (username, node, seq);

-- What a client's entity capabilities (XEP-0115) stand for, learnt once per
-- verification string and shared by every node.
CREATE TABLE caps_features (
    ver      TEXT COLLATE "C" PRIMARY KEY,
    features TEXT NOT NULL       -- one per line
);
