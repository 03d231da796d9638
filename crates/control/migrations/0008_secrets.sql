-- Secrets, a row per version. Values are never stored in clear:
-- `ciphertext` is the version's values (protobuf SecretValues) under AES-256-GCM
-- with a data key of its own; `data_key` is that key wrapped by the
-- key-encryption key `key_id` names (outside the database, mode 0600).
CREATE TABLE secret_versions (
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    keys        TEXT    NOT NULL, -- JSON array of the key names
    sites       TEXT,             -- selector of the sites it may reach; NULL: every site
    images      TEXT    NOT NULL, -- JSON array of the image patterns that may receive it
    size        INTEGER NOT NULL, -- bytes of all values
    key_id      TEXT    NOT NULL,
    data_key    BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    created_at  TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    PRIMARY KEY (name, version)
);
