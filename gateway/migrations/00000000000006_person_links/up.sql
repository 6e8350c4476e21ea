-- What the matching engine (or a person) decided about two person records
-- (gateway/src/tracker/identity.rs). One row per pair, whichever record came first:
--   LINKED   one person: a certain match on create or update, or a person's confirmation;
--   OPEN     a potential duplicate waiting for a person (DHIS2's OPEN);
--   INVALID  a person said they are two people (DHIS2's INVALID): never proposed again;
--   MERGED   kept for the record after Patient/$merge.
-- `origin` MANUAL rows are people's decisions: automatic re-matching never changes them.
-- `source_id` is the record whose write found the match, `target_id` the record it matched.
CREATE TABLE person_link (
  id           bigserial PRIMARY KEY,
  source_id    bigint NOT NULL REFERENCES tracked_entity (id) ON DELETE CASCADE,
  target_id    bigint NOT NULL REFERENCES tracked_entity (id) ON DELETE CASCADE,
  status       text NOT NULL CHECK (status IN ('LINKED', 'OPEN', 'INVALID', 'MERGED')),
  origin       text NOT NULL CHECK (origin IN ('AUTO', 'MANUAL')),
  score        double precision NOT NULL,
  grade        text NOT NULL CHECK (grade IN ('certain', 'probable', 'possible', 'certainly-not')),
  ruleset      text NOT NULL,
  -- Each field's contribution, as the $match explanation extension shows it.
  explanation  jsonb NOT NULL,
  created      timestamptz NOT NULL DEFAULT now(),
  last_updated timestamptz NOT NULL DEFAULT now(),
  decided_by   text,
  CHECK (source_id <> target_id)
);
CREATE UNIQUE INDEX person_link_pair_idx
  ON person_link (LEAST(source_id, target_id), GREATEST(source_id, target_id));
CREATE INDEX person_link_source_idx ON person_link (source_id);
CREATE INDEX person_link_target_idx ON person_link (target_id);
-- The work list: open potential duplicates, oldest first.
CREATE INDEX person_link_open_idx ON person_link (created) WHERE status = 'OPEN';
