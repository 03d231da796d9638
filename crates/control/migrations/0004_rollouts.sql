-- The rollout of each deployment (the engine's state as JSON), so that a
-- restarted control plane resumes where it was.
CREATE TABLE rollouts (
    deployment  TEXT    PRIMARY KEY,
    state       TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);

-- Every rollout a deployment went through, newest last: its history.
CREATE TABLE rollout_history (
    id          INTEGER PRIMARY KEY,
    deployment  TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    outcome     TEXT    NOT NULL
);
