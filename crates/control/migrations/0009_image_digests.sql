-- The digest each application version's images resolved to, as the first
-- site that pulled them reported it. Every site of that version then runs
-- `repository@digest`: the same bytes, whatever the registry's tag says later.
CREATE TABLE image_digests (
    application TEXT NOT NULL,
    version     TEXT NOT NULL,
    image       TEXT NOT NULL,
    digest      TEXT NOT NULL,
    site        TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (application, version, image)
);
