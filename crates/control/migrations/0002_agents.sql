-- Single-use join tokens; only a SHA-256 of the secret part is kept.
CREATE TABLE join_tokens (
    id            INTEGER PRIMARY KEY,
    token_hash    TEXT    NOT NULL UNIQUE,
    site          TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    expires_at    TEXT    NOT NULL,
    used_at       TEXT,
    used_by_host  TEXT
);

-- Enrolled hosts, their discovered facts and what their agent last said.
CREATE TABLE hosts (
    site              TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    facts             TEXT    NOT NULL DEFAULT '{}',
    agent_version     TEXT    NOT NULL DEFAULT '',
    applied_revision  INTEGER NOT NULL DEFAULT 0,
    enrolled_at       TEXT    NOT NULL,
    last_seen         TEXT,
    PRIMARY KEY (site, name)
);

-- The compiled desired state of each site, with its revision.
CREATE TABLE site_states (
    site        TEXT    PRIMARY KEY,
    revision    INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);

-- The last reported status of each instance.
CREATE TABLE instance_status (
    site         TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    instance     TEXT    NOT NULL,
    application  TEXT    NOT NULL,
    service      TEXT    NOT NULL,
    spec_hash    TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    exit_code    INTEGER,
    reason       TEXT    NOT NULL DEFAULT '',
    updated_at   TEXT    NOT NULL,
    PRIMARY KEY (site, host, instance)
);
