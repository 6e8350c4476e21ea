-- Matching: a fifth blocking key, the house number with the street's phonetic code (kind a), for
-- duplicates whose names and birth date all went wrong but whose address did not. People
-- registered before it have none until `kiunga match-keys` runs.
ALTER TABLE person_match_key DROP CONSTRAINT person_match_key_kind_check;
ALTER TABLE person_match_key ADD CONSTRAINT person_match_key_kind_check
  CHECK (kind IN ('n', 'p', 't', 'd', 'a'));
