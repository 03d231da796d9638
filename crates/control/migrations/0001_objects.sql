-- Objects applied by operators: one row per (kind, name); labels and spec as JSON.
CREATE TABLE objects (
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    generation  INTEGER NOT NULL,
    labels      TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (kind, name)
);

-- The last versions of each application (the newest 10, plus any a deployment pins).
CREATE TABLE application_versions (
    application TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    generation  INTEGER NOT NULL,
    spec        TEXT    NOT NULL,
    applied_at  TEXT    NOT NULL,
    PRIMARY KEY (application, version)
);

-- API tokens: only a SHA-256 of each token is kept.
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  TEXT    NOT NULL
);

-- Who changed what, in order.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    generation  INTEGER NOT NULL
);
