-- Each data value carries its program and the org unit that owns its person's record in that
-- program (program_ownership, else the enrolling org unit), so that the ownership rule
-- (store::scoped::VALUE_VISIBLE) is a test on the value's own row. Through the enrollment it cost
-- two index look-ups per matching row of an Observation search: a restricted caller's search ran
-- 1.10 times the cost of an unrestricted one (docs/performance.md, issue #10).
--
-- The gateway supplies both columns when it writes values (one look-up per batch, store::pending).
-- Whatever else inserts a value without them, or moves a value to another enrollment, gets them
-- from the trigger below. Every change of an owner (a transfer, a merge and its undoing, an
-- enrollment moved) re-derives the values it touches, so the columns never disagree with
-- program_ownership and enrollment; tests/merge.rs and tests/care.rs check that they do not.
ALTER TABLE event_data_value ADD COLUMN program_id bigint, ADD COLUMN owner_org_unit_id bigint;
UPDATE event_data_value d
   SET program_id = en.program_id, owner_org_unit_id = COALESCE(po.org_unit_id, en.org_unit_id)
  FROM enrollment en
  LEFT JOIN program_ownership po
    ON po.tracked_entity_id = en.tracked_entity_id AND po.program_id = en.program_id
 WHERE en.id = d.enrollment_id;
ALTER TABLE event_data_value ALTER COLUMN program_id SET NOT NULL,
                             ALTER COLUMN owner_org_unit_id SET NOT NULL;

-- A value's program and owner from its enrollment (on insert without them, or on a move).
CREATE FUNCTION kiunga_value_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  SELECT en.program_id, COALESCE(po.org_unit_id, en.org_unit_id)
    INTO NEW.program_id, NEW.owner_org_unit_id
    FROM enrollment en
    LEFT JOIN program_ownership po
      ON po.tracked_entity_id = en.tracked_entity_id AND po.program_id = en.program_id
   WHERE en.id = NEW.enrollment_id;
  RETURN NEW;
END $$;

CREATE TRIGGER event_data_value_owner_on_insert BEFORE INSERT ON event_data_value
  FOR EACH ROW WHEN (NEW.program_id IS NULL OR NEW.owner_org_unit_id IS NULL)
  EXECUTE FUNCTION kiunga_value_owner();
CREATE TRIGGER event_data_value_owner_on_move BEFORE UPDATE OF enrollment_id ON event_data_value
  FOR EACH ROW WHEN (OLD.enrollment_id IS DISTINCT FROM NEW.enrollment_id)
  EXECUTE FUNCTION kiunga_value_owner();

-- Re-derives the values of a person's enrollments in a program (their owner changed).
CREATE FUNCTION kiunga_values_reown(person bigint, program bigint) RETURNS void LANGUAGE sql AS $$
  UPDATE event_data_value d
     SET program_id = en.program_id, owner_org_unit_id = COALESCE(po.org_unit_id, en.org_unit_id)
    FROM enrollment en
    JOIN event ev ON ev.enrollment_id = en.id
    LEFT JOIN program_ownership po
      ON po.tracked_entity_id = en.tracked_entity_id AND po.program_id = en.program_id
   WHERE en.tracked_entity_id = person AND en.program_id = program AND d.event_id = ev.id
     AND (d.program_id, d.owner_org_unit_id)
         IS DISTINCT FROM (en.program_id, COALESCE(po.org_unit_id, en.org_unit_id));
$$;

-- An owner row changed or went: the values of its old and its new (person, program).
CREATE FUNCTION kiunga_ownership_reown() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM kiunga_values_reown(OLD.tracked_entity_id, OLD.program_id);
  END IF;
  IF TG_OP = 'UPDATE' AND (OLD.tracked_entity_id, OLD.program_id)
                          IS DISTINCT FROM (NEW.tracked_entity_id, NEW.program_id) THEN
    PERFORM kiunga_values_reown(NEW.tracked_entity_id, NEW.program_id);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER program_ownership_reown AFTER UPDATE OR DELETE ON program_ownership
  FOR EACH ROW EXECUTE FUNCTION kiunga_ownership_reown();

-- New owner rows: every enrollment makes one (store::pending), before it has any value, so one
-- statement per insert re-derives the rare values that predate their owner row (a transfer of a
-- person whose enrollment had none).
CREATE FUNCTION kiunga_ownership_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE event_data_value d
     SET owner_org_unit_id = a.org_unit_id
    FROM added a
    JOIN enrollment en ON en.tracked_entity_id = a.tracked_entity_id AND en.program_id = a.program_id
    JOIN event ev ON ev.enrollment_id = en.id
   WHERE d.event_id = ev.id AND d.owner_org_unit_id IS DISTINCT FROM a.org_unit_id;
  RETURN NULL;
END $$;

CREATE TRIGGER program_ownership_added AFTER INSERT ON program_ownership
  REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION kiunga_ownership_added();

-- An enrollment moved to another person, program or org unit: its values follow.
CREATE FUNCTION kiunga_enrollment_reown() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM kiunga_values_reown(NEW.tracked_entity_id, NEW.program_id);
  RETURN NULL;
END $$;

CREATE TRIGGER enrollment_reown AFTER UPDATE OF tracked_entity_id, program_id, org_unit_id ON enrollment
  FOR EACH ROW WHEN ((OLD.tracked_entity_id, OLD.program_id, OLD.org_unit_id)
                     IS DISTINCT FROM (NEW.tracked_entity_id, NEW.program_id, NEW.org_unit_id))
  EXECUTE FUNCTION kiunga_enrollment_reown();
