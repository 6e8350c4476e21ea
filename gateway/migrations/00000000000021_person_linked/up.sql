-- Whether a person may have entries in Patient.link: a LINKED or MERGED decision, or a
-- relationship in which she is someone's RelatedPerson. Most people have none, and reading a
-- Patient looked them up with a statement of its own (kiunga_person_links) that cost about as
-- much as reading the person: a third of a read by id's database time (docs/performance.md,
-- issue #6). A read that finds the flag false skips that statement (rest::identity::show_links).
--
-- The flag only ever goes from false to true, set by the triggers below whenever a decision or a
-- relationship names the person (also when a merge moves them to her). So it can be true with no
-- link left, which costs the look-up and nothing else; it is never false while she has one.
ALTER TABLE tracked_entity ADD COLUMN linked boolean NOT NULL DEFAULT false;
UPDATE tracked_entity te SET linked = true
 WHERE EXISTS (SELECT 1 FROM person_link pl
                WHERE (pl.source_id = te.id OR pl.target_id = te.id) AND pl.status IN ('LINKED', 'MERGED'))
    OR EXISTS (SELECT 1 FROM relationship r
                WHERE r.from_tracked_entity_id = te.id OR r.to_tracked_entity_id = te.id);

CREATE FUNCTION kiunga_person_linked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'person_link' THEN
    UPDATE tracked_entity SET linked = true
     WHERE id IN (NEW.source_id, NEW.target_id) AND NOT linked;
  ELSE
    UPDATE tracked_entity SET linked = true
     WHERE id IN (NEW.from_tracked_entity_id, NEW.to_tracked_entity_id) AND NOT linked;
  END IF;
  RETURN NULL;
END $$;

-- Open (possible-match) decisions are not shown, so they fire nothing: matching on write makes
-- many of them.
CREATE TRIGGER person_link_marks_linked AFTER INSERT OR UPDATE ON person_link
  FOR EACH ROW WHEN (NEW.status IN ('LINKED', 'MERGED'))
  EXECUTE FUNCTION kiunga_person_linked();
CREATE TRIGGER relationship_marks_linked AFTER INSERT OR UPDATE ON relationship
  FOR EACH ROW EXECUTE FUNCTION kiunga_person_linked();
