-- Which CA signed each host certificate, by the CA's name: a CA rotation
-- retires the previous CA only once every host holds a certificate of the
-- current one (`outpost control rotate-ca --retire`). Certificates issued
-- before this table existed have no row: they are of the first CA.
CREATE TABLE certificate_issuers (
    serial  TEXT PRIMARY KEY,
    issuer  TEXT NOT NULL
);
