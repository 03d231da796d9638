-- What agents send up besides status, and what each host's link carries.

-- The last sequence number of the host's outbound queue that is stored
-- (records at or below it are skipped when resent), the records its agent
-- dropped because its queue was full, and the bytes of its sessions counted
-- at the socket (TLS included).
ALTER TABLE hosts ADD COLUMN received_seq   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN dropped        INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN bytes_received INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN bytes_sent     INTEGER NOT NULL DEFAULT 0;

CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    site         TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    seq          INTEGER,
    at           TEXT    NOT NULL,
    received_at  TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    application  TEXT    NOT NULL,
    service      TEXT    NOT NULL,
    instance     TEXT    NOT NULL,
    message      TEXT    NOT NULL,
    exit_code    INTEGER
);
CREATE INDEX events_by_site ON events (site, id);
CREATE INDEX events_by_application ON events (application, id);
CREATE INDEX events_by_received ON events (received_at);

CREATE TABLE log_lines (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    site         TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    application  TEXT    NOT NULL,
    service      TEXT    NOT NULL,
    instance     TEXT    NOT NULL,
    container    TEXT    NOT NULL,
    at           TEXT    NOT NULL,
    stream       TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    received_at  TEXT    NOT NULL
);
CREATE INDEX log_lines_by_application ON log_lines (application, id);
CREATE INDEX log_lines_by_received ON log_lines (received_at);

CREATE TABLE metric_samples (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    site         TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    at           TEXT    NOT NULL,
    received_at  TEXT    NOT NULL,
    sample       TEXT    NOT NULL
);
CREATE INDEX metric_samples_by_host ON metric_samples (site, host, id);
CREATE INDEX metric_samples_by_received ON metric_samples (received_at);
