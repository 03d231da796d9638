-- The site network's underlay keys (issue 17). Per site: the key epoch its
-- hosts hold certificates of, the epoch before it while a rotation is under
-- way (still accepted), and when the last rotation began. Per host: the
-- newest epoch it holds a certificate of.
CREATE TABLE site_keys (
    site TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    retiring INTEGER,
    rotated_at INTEGER NOT NULL
);

CREATE TABLE host_keys (
    site TEXT NOT NULL,
    host TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (site, host)
);
