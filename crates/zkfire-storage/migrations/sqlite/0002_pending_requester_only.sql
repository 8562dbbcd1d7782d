-- A pending subscription request is delivered again at login as a plain
-- subscribe from its requester, so only the requester is kept: the stanza
-- it came in (up to a whole stanza's size) is dropped.
ALTER TABLE pending_subscriptions DROP COLUMN stanza;
