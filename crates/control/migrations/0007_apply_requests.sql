-- The outcome of each apply that carried an Idempotency-Key, stored in the
-- apply's own transaction: a client that lost the answer and asks again
-- gets this outcome, and nothing is applied twice. Kept for a day.
CREATE TABLE apply_requests (
    request_key  TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    results      TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    PRIMARY KEY (request_key, actor)
);
CREATE INDEX apply_requests_by_age ON apply_requests (created_at);
