-- A site's log tail (the console's site page, `outpost logs --site`) reads
-- the newest lines of one site: without this index PostgreSQL walks every
-- line backwards to find them (issue 20: an index for every per-site query).
CREATE INDEX log_lines_by_site ON log_lines (site, id);
