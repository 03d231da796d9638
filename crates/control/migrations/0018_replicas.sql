-- Replicas of the control plane sharing one database.

-- The CA files, sealed with the key-encryption key every replica is given:
-- one row, replaced whole at each rotation and retirement.
CREATE TABLE authority (
    name        TEXT    PRIMARY KEY,
    key_id      TEXT    NOT NULL,
    sealed      BLOB    NOT NULL,
    generation  INTEGER NOT NULL
);

-- Each replica: where its API answers, when it last said it lives (unix
-- milliseconds), and a number raised whenever its sessions change.
CREATE TABLE replicas (
    id          TEXT    PRIMARY KEY,
    url         TEXT    NOT NULL,
    seen_at     INTEGER NOT NULL,
    generation  INTEGER NOT NULL
);

-- Which replica holds each host's session, written in batches as sessions
-- begin and end (never per heartbeat).
CREATE TABLE sessions (
    replica     TEXT    NOT NULL,
    site        TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    PRIMARY KEY (replica, site, host)
);

-- Raised by every write of a rollout, so a replica knows when the rollouts
-- it holds in memory are stale.
CREATE TABLE counters (
    name        TEXT    PRIMARY KEY,
    value       INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('rollouts', 0);
