-- Application event streams (issue 15).

-- Up-records, stored once per (site, host, application, topic, seq); `id`
-- is the order they were stored in, which readers and NATS follow.
CREATE TABLE stream_records (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    application TEXT NOT NULL,
    topic       TEXT NOT NULL,
    site        TEXT NOT NULL,
    host        TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    produced_ms INTEGER NOT NULL,
    stored_ms   INTEGER NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX stream_records_by_topic ON stream_records (application, topic, id);

-- The newest up-record stored per host and topic: a resent batch is
-- stored only past it.
CREATE TABLE stream_received (
    site        TEXT NOT NULL,
    host        TEXT NOT NULL,
    application TEXT NOT NULL,
    topic       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (site, host, application, topic)
);

-- Down-records: numbered per topic; each belongs to one publish, which
-- names the sites that receive it.
CREATE TABLE stream_publishes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    application  TEXT NOT NULL,
    topic        TEXT NOT NULL,
    published_ms INTEGER NOT NULL,
    published_by TEXT NOT NULL
);
CREATE TABLE stream_publish_sites (
    site    TEXT NOT NULL,
    publish INTEGER NOT NULL REFERENCES stream_publishes (id) ON DELETE CASCADE,
    PRIMARY KEY (site, publish)
);
CREATE TABLE stream_down (
    application TEXT NOT NULL,
    topic       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    publish     INTEGER NOT NULL REFERENCES stream_publishes (id) ON DELETE CASCADE,
    at_ms       INTEGER NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (application, topic, seq)
);

-- The newest number each down topic gave a record (never reused, even
-- once its records are pruned).
CREATE TABLE stream_down_topics (
    application TEXT NOT NULL,
    topic       TEXT NOT NULL,
    last_seq    INTEGER NOT NULL,
    PRIMARY KEY (application, topic)
);

-- The newest down-record each host has stored (it acknowledged it).
CREATE TABLE stream_delivered (
    site        TEXT NOT NULL,
    host        TEXT NOT NULL,
    application TEXT NOT NULL,
    topic       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (site, host, application, topic)
);

-- What each host last reported of its topics (a JSON array of
-- outpost_api::stream::TopicStatus).
CREATE TABLE host_streams (
    site        TEXT NOT NULL,
    host        TEXT NOT NULL,
    topics      TEXT NOT NULL,
    PRIMARY KEY (site, host)
);

-- How far the up-records have been handed to NATS (`--streams-nats`).
CREATE TABLE stream_forwarded (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    through INTEGER NOT NULL
);
