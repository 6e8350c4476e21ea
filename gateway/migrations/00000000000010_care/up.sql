-- Care across time and places (#9): RelatedPerson over relationships, EpisodeOfCare over
-- enrollments, ownership transfer and break-the-glass access to protected programs.

-- The role a RelatedPerson was sent with (v3 RoleCode MTH, NMTH, FTH...). Several codes may map to
-- one relationship type (mappings/care.toml); the one received is kept and rendered back.
ALTER TABLE relationship
  ADD COLUMN role_system  text,
  ADD COLUMN role_code    text,
  ADD COLUMN role_display text,
  -- Which end the RelatedPerson is (the mother of a Mother - Child relationship is `from`); the
  -- other end is RelatedPerson.patient.
  ADD COLUMN related_is_from boolean NOT NULL DEFAULT true;
-- "A child has one mother": the live relationships of a type that end at a person.
CREATE INDEX relationship_type_to_idx ON relationship (relationship_type_id, to_tracked_entity_id)
  WHERE NOT deleted;

-- Who moved a program's ownership, from where to where and why, in the order it happened.
CREATE INDEX program_ownership_history_time_idx ON program_ownership_history (changed_at);
CREATE TRIGGER program_ownership_history_append_only BEFORE UPDATE OR DELETE ON program_ownership_history
  FOR EACH ROW EXECUTE FUNCTION kiunga_append_only();

-- Break the glass: a caller outside the owner's capture scope reads a protected program's record
-- for a stated reason, for a limited time. Every grant is kept (append-only): it is the audit.
CREATE TABLE ownership_override (
  id                bigserial PRIMARY KEY,
  tracked_entity_id bigint NOT NULL REFERENCES tracked_entity (id),
  program_id        bigint NOT NULL REFERENCES program (id),
  actor             text NOT NULL,
  reason            text NOT NULL CHECK (btrim(reason) <> ''),
  granted_at        timestamptz NOT NULL DEFAULT now(),
  expires_at        timestamptz NOT NULL,
  request_id        text,
  CHECK (expires_at > granted_at)
);
CREATE INDEX ownership_override_lookup_idx
  ON ownership_override (actor, tracked_entity_id, program_id, expires_at);
CREATE TRIGGER ownership_override_append_only BEFORE UPDATE OR DELETE ON ownership_override
  FOR EACH ROW EXECUTE FUNCTION kiunga_append_only();

-- Whether the caller may see an enrollment's data (the enrollment, its events and data values),
-- DHIS2's ownership rule: the person's owner in the program (the enrolling org unit when no
-- ownership row exists) is in the caller's capture scope; or the program is OPEN or AUDITED and
-- the owner is in the search scope; or the program is PROTECTED and the caller broke the glass
-- for this person and program, and the grant has not expired. CLOSED programs: capture only.
-- The scope arrives as org-unit ids computed by the gateway from its metadata
-- (store::scoped::ProgramScope); only scoped callers pay for the call.
CREATE FUNCTION kiunga_enrollment_visible(p_enrollment bigint, p_search bigint[], p_capture bigint[],
                                          p_open bigint[], p_protected bigint[], p_actor text)
RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT CASE
           WHEN x.owner = ANY (p_capture) THEN true
           WHEN x.program_id = ANY (p_open) THEN x.owner = ANY (p_search)
           WHEN x.program_id = ANY (p_protected) THEN EXISTS (
             SELECT 1 FROM ownership_override o
             WHERE o.actor = p_actor AND o.tracked_entity_id = x.tracked_entity_id
               AND o.program_id = x.program_id AND o.expires_at > now())
           ELSE false
         END
  FROM (SELECT en.tracked_entity_id, en.program_id,
               COALESCE(po.org_unit_id, en.org_unit_id) AS owner
        FROM enrollment en
        LEFT JOIN program_ownership po
          ON po.tracked_entity_id = en.tracked_entity_id AND po.program_id = en.program_id
        WHERE en.id = p_enrollment) x
$$;

-- What every rendered Patient carries in `link`, for a page of people (by uid): the records
-- LINKED to or merged with each (migration 6/8), and the RelatedPersons that stand for each in
-- someone else's record; with whether the caller may see the other person (registered at, or
-- owned in a program by, an org unit of the search scope given as paths and LIKE patterns; NULL
-- for the whole tree). One call per page. A plan kept per connection: planning these four
-- branches afresh cost a third of a millisecond on every read of a Patient.
CREATE FUNCTION kiunga_person_links(p_uids text[], p_roots text[], p_patterns text[])
RETURNS TABLE (person text, other text, other_org_unit_id bigint, kind text, person_id bigint,
               source_id bigint, visible boolean)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  RETURN QUERY
  SELECT x.person, x.other, x.other_org_unit_id, x.kind, x.person_id, x.source_id,
         p_roots IS NULL
         OR x.other_org_unit_id IN (SELECT ou.id FROM org_unit ou
                                    WHERE ou.path = ANY (p_roots) OR ou.path LIKE ANY (p_patterns))
         OR EXISTS (SELECT 1 FROM program_ownership po JOIN org_unit ou ON ou.id = po.org_unit_id
                    WHERE po.tracked_entity_id = x.other_id
                      AND (ou.path = ANY (p_roots) OR ou.path LIKE ANY (p_patterns)))
  FROM (
    SELECT a.uid::text AS person, b.uid::text AS other, b.org_unit_id AS other_org_unit_id,
           pl.status AS kind, a.id AS person_id, pl.source_id, b.id AS other_id
    FROM tracked_entity a JOIN person_link pl ON pl.source_id = a.id
    JOIN tracked_entity b ON b.id = pl.target_id
    WHERE a.uid = ANY (p_uids) AND pl.status IN ('LINKED', 'MERGED') AND NOT a.deleted AND NOT b.deleted
  UNION ALL
    SELECT b.uid::text, a.uid::text, a.org_unit_id, pl.status, b.id, pl.source_id, a.id
    FROM tracked_entity b JOIN person_link pl ON pl.target_id = b.id
    JOIN tracked_entity a ON a.id = pl.source_id
    WHERE b.uid = ANY (p_uids) AND pl.status IN ('LINKED', 'MERGED') AND NOT a.deleted AND NOT b.deleted
  UNION ALL
    -- She is the related person at the `from` end; the RelatedPerson's patient is the `to` end.
    SELECT a.uid::text, r.uid::text, b.org_unit_id, 'RELATED'::text, a.id, a.id, b.id
    FROM tracked_entity a JOIN relationship r ON r.from_tracked_entity_id = a.id
    JOIN tracked_entity b ON b.id = r.to_tracked_entity_id
    WHERE a.uid = ANY (p_uids) AND r.related_is_from AND NOT r.deleted AND NOT b.deleted
  UNION ALL
    SELECT a.uid::text, r.uid::text, b.org_unit_id, 'RELATED'::text, a.id, a.id, b.id
    FROM tracked_entity a JOIN relationship r ON r.to_tracked_entity_id = a.id
    JOIN tracked_entity b ON b.id = r.from_tracked_entity_id
    WHERE a.uid = ANY (p_uids) AND NOT r.related_is_from AND NOT r.deleted AND NOT b.deleted
  ) x;
END $$;

-- Matching: a fourth blocking key, the full birth date with the village (kind d), for duplicates
-- whose names are both misspelt beyond their phonetic codes. People registered before it have
-- none until `kiunga match-keys` runs.
ALTER TABLE person_match_key DROP CONSTRAINT person_match_key_kind_check;
ALTER TABLE person_match_key ADD CONSTRAINT person_match_key_kind_check
  CHECK (kind IN ('n', 'p', 't', 'd'));
