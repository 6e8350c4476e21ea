DROP FUNCTION kiunga_match_candidates(int4[], text[], text[], int4[], int4, int8, int4[], int8[], text[], int8[], int4[], text[]);
DROP INDEX person_match_key_lookup_idx;
ALTER TABLE person_match_key DROP COLUMN sv;
CREATE INDEX person_match_key_lookup_idx ON person_match_key (kind, code, year, tracked_entity_id);
