DELETE FROM person_match_key WHERE kind = 'a';
ALTER TABLE person_match_key DROP CONSTRAINT person_match_key_kind_check;
ALTER TABLE person_match_key ADD CONSTRAINT person_match_key_kind_check
  CHECK (kind IN ('n', 'p', 't', 'd'));
