-- Blocking keys for Patient/$match (gateway/src/matching/keys.rs): per person, the phonetic code
-- of each name token with the birth year (kind n), the family and given codes as a pair without
-- the year (kind p), and the phone's last nine digits (kind t).
-- A query reads a handful of index ranges instead of comparing every person.
CREATE TABLE person_match_key (
  tracked_entity_id bigint NOT NULL REFERENCES tracked_entity (id) ON DELETE CASCADE,
  kind              char(1) NOT NULL CHECK (kind IN ('n', 'p', 't')),
  code              text NOT NULL,
  year              integer
);
-- The person id is in the index so that a lookup is an index-only scan.
CREATE INDEX person_match_key_lookup_idx ON person_match_key (kind, code, year, tracked_entity_id);
CREATE INDEX person_match_key_person_idx ON person_match_key (tracked_entity_id);
