-- Where the other hosts of a host's site reach it (`outpost agent
-- --site-listen`), as its hello says; empty when it serves no peers.
ALTER TABLE hosts ADD COLUMN site_address TEXT NOT NULL DEFAULT '';
