-- One key per application owner: its secrets' data keys, and its log lines
-- and stream records at rest, are encrypted under it. The key is wrapped
-- by the key-encryption key `key_id` names (the secrets key file), and is
-- deleted with its tenant, which leaves what it sealed unreadable.
CREATE TABLE tenant_keys (
    tenant      TEXT    PRIMARY KEY,
    key_id      TEXT    NOT NULL,
    wrapped     BLOB    NOT NULL,
    created_at  TEXT    NOT NULL
);
