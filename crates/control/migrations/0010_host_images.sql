-- What each host reports of the images it is to fetch ahead of a switch
-- (pre-staging): whether it holds each one, and how far its pull has come.
-- Replaced with every status report of the host.
CREATE TABLE host_images (
    site        TEXT NOT NULL,
    host        TEXT NOT NULL,
    application TEXT NOT NULL,
    version     TEXT NOT NULL,
    image       TEXT NOT NULL,
    present     INTEGER NOT NULL,
    fetched     INTEGER NOT NULL,
    total       INTEGER NOT NULL,
    error       TEXT NOT NULL,
    PRIMARY KEY (site, host, application, version, image)
);
