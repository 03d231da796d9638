-- The operator's labels on a host, beside its discovered (read-only) facts.
ALTER TABLE hosts ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
