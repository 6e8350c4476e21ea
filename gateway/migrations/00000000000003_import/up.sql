-- Records that arrived from elsewhere (a bulk import, an EMR export), keyed by their id there
-- (e.g. a Bundle entry's `urn:uuid:` fullUrl), so that importing the same file again updates the
-- record instead of storing it twice.
CREATE TABLE external_ref (
  source        text NOT NULL,
  resource_type text NOT NULL,
  uid           dhis_uid NOT NULL,
  created       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (source, resource_type)
);
CREATE INDEX external_ref_uid_idx ON external_ref (resource_type, uid);
