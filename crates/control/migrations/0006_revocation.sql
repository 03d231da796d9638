-- The serial of the certificate each host was issued at enrollment: a
-- session must present exactly that one.
ALTER TABLE hosts ADD COLUMN cert_serial TEXT;

-- Certificates that may never connect again (their site was deleted with
-- --cascade; later, blocked hosts). Checked on every connection and call.
CREATE TABLE revoked_certificates (
    serial      TEXT    PRIMARY KEY,
    site        TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    revoked_at  TEXT    NOT NULL
);
