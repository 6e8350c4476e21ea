-- Patient/$merge (gateway/src/tracker/merge.rs). Nothing is deleted by a merge: the source record
-- stays, inactive, pointing at the survivor, and what moved is written down so that $unmerge
-- can put exactly that back.

-- The survivor of a merged record. Searches, $match and PIXm leave merged records out; a read
-- of one answers with Patient.link replaced-by.
ALTER TABLE tracked_entity ADD COLUMN merged_into_id bigint REFERENCES tracked_entity (id);

CREATE TABLE person_merge (
  id          bigserial PRIMARY KEY,
  source_id   bigint NOT NULL REFERENCES tracked_entity (id),
  target_id   bigint NOT NULL REFERENCES tracked_entity (id),
  merged_at   timestamptz NOT NULL,
  merged_by   text NOT NULL,
  undone_at   timestamptz,
  undone_by   text,
  -- Row ids that moved and the values each record held before and after (ids, not PHI, except
  -- the attribute values, which are the records' own data kept beside them).
  moved       jsonb NOT NULL,
  CHECK (source_id <> target_id)
);
-- A record is merged into one survivor at a time.
CREATE UNIQUE INDEX person_merge_source_idx ON person_merge (source_id) WHERE undone_at IS NULL;
CREATE INDEX person_merge_target_idx ON person_merge (target_id);
