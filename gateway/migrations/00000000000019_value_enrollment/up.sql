-- Each data value carries its event's enrollment, so that the ownership rule (store::scoped::VISIBLE)
-- reaches the enrollment from the value itself. Through the event it cost a correlated look-up per
-- row of an Observation search: about a third of a search's time with a restricted scope
-- (docs/performance.md, issue #10).
--
-- The gateway writes the column with the value (it knows the event). An event moved to another
-- enrollment (a merge, or its undoing) takes its values along through the trigger below; that is
-- rare, so the trigger costs the write path nothing.
ALTER TABLE event_data_value ADD COLUMN enrollment_id bigint;
UPDATE event_data_value d SET enrollment_id = e.enrollment_id FROM event e WHERE e.id = d.event_id;
ALTER TABLE event_data_value ALTER COLUMN enrollment_id SET NOT NULL;

CREATE FUNCTION kiunga_event_values_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE event_data_value SET enrollment_id = NEW.enrollment_id
   WHERE event_id = NEW.id AND enrollment_id IS DISTINCT FROM NEW.enrollment_id;
  RETURN NULL;
END $$;

CREATE TRIGGER event_values_follow AFTER UPDATE OF enrollment_id ON event
  FOR EACH ROW WHEN (OLD.enrollment_id IS DISTINCT FROM NEW.enrollment_id)
  EXECUTE FUNCTION kiunga_event_values_follow();
