-- Issue 18. An API token is for a user (or a robot), carries one role in
-- one tenant, optionally a selector of the sites it may act on, and may
-- expire or be revoked. Tokens from before keep working as admin tokens of
-- the provider that never expire.
ALTER TABLE api_tokens ADD COLUMN user_name TEXT;
ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE api_tokens ADD COLUMN tenant TEXT NOT NULL DEFAULT 'provider';
ALTER TABLE api_tokens ADD COLUMN sites TEXT;
ALTER TABLE api_tokens ADD COLUMN created_by TEXT;
ALTER TABLE api_tokens ADD COLUMN expires_at TEXT;
ALTER TABLE api_tokens ADD COLUMN revoked_at TEXT;

-- The audit trail: every change, every read of a secret's value and every
-- refusal, one row per request, written by the API's policy layer. Each
-- row's hash covers the row and the hash of the row before it, so a row
-- changed, deleted or inserted behind the control plane's back breaks the
-- chain (`outpost audit verify`). Rows of the older `audit_log` move here
-- unchained (hash NULL): they come before every chained row.
CREATE TABLE audit_trail (
    id          INTEGER PRIMARY KEY,
    at          TEXT    NOT NULL,
    token       TEXT    NOT NULL,
    user_name   TEXT    NOT NULL,
    tenant      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    objects     TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    result      TEXT    NOT NULL,
    hash        TEXT
);
CREATE INDEX audit_trail_at ON audit_trail (at);

INSERT INTO audit_trail (at, token, user_name, tenant, action, objects, source, status, result, hash)
SELECT at, actor, actor, 'provider', action, json_array(kind || '/' || name), '', 200, 'ok', NULL
FROM audit_log ORDER BY id;

DROP TABLE audit_log;

-- Host certificates are short-lived and renewed over the session: the
-- serial a host held before its last renewal stays accepted (until it
-- expires), for calls on connections made before the renewal.
ALTER TABLE hosts ADD COLUMN previous_serial TEXT;

-- Hosts and sites cut off by `outpost block`: their certificates are
-- refused at the handshake and on every call until `outpost unblock`.
CREATE TABLE blocks (
    target      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    wipe        INTEGER NOT NULL,
    blocked_at  TEXT    NOT NULL,
    blocked_by  TEXT    NOT NULL,
    PRIMARY KEY (target, name)
);
