DROP TABLE person_merge;
ALTER TABLE tracked_entity DROP COLUMN merged_into_id;
