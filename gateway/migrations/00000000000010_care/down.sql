DELETE FROM person_match_key WHERE kind = 'd';
ALTER TABLE person_match_key DROP CONSTRAINT person_match_key_kind_check;
ALTER TABLE person_match_key ADD CONSTRAINT person_match_key_kind_check CHECK (kind IN ('n', 'p', 't'));
DROP FUNCTION kiunga_person_links(text[], text[], text[]);
DROP FUNCTION kiunga_enrollment_visible(bigint, bigint[], bigint[], bigint[], bigint[], text);
DROP TABLE ownership_override;
DROP TRIGGER program_ownership_history_append_only ON program_ownership_history;
DROP INDEX program_ownership_history_time_idx;
DROP INDEX relationship_type_to_idx;
ALTER TABLE relationship DROP COLUMN role_system, DROP COLUMN role_code, DROP COLUMN role_display,
  DROP COLUMN related_is_from;
