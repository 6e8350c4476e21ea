-- Queue outbox items from the change log itself: a statement-level trigger on change_log selects
-- the changes the rules want, in the writing transaction, whatever process wrote them (the server,
-- `kiunga import`, a merge) and without a round trip of its own. It replaces the call the gateway
-- made at the end of each unit of work (kiunga_outbox_enqueue stays, for `outbox replay`).
-- Indexes nothing reads are dropped: every change written pays for each index of outbox_item.

DROP INDEX outbox_item_resource;
DROP INDEX outbox_item_created;

CREATE FUNCTION kiunga_outbox_from_change_log() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM outbox_rule WHERE kind IN ('Patient', 'Encounter', 'Observation')) THEN
    RETURN NULL;
  END IF;
  INSERT INTO outbox_item (target, kind, resource_uid, person_uid, operation, version)
  SELECT r.target, c.resource_type, c.resource_uid, f.person, c.operation, c.version
  FROM changed c
  JOIN LATERAL (
    SELECT te.uid AS person, ou.path, NULL::bigint AS stage
      FROM tracked_entity te JOIN org_unit ou ON ou.id = te.org_unit_id
     WHERE c.resource_type = 'Patient' AND te.uid = c.resource_uid
    UNION ALL
    SELECT te.uid, ou.path, e.program_stage_id
      FROM event e JOIN tracked_entity te ON te.id = e.tracked_entity_id
      JOIN org_unit ou ON ou.id = e.org_unit_id
     WHERE c.resource_type = 'Encounter' AND e.uid = c.resource_uid
    UNION ALL
    SELECT te.uid, ou.path, e.program_stage_id
      FROM event_data_value d JOIN event e ON e.id = d.event_id
      JOIN tracked_entity te ON te.id = d.tracked_entity_id
      JOIN org_unit ou ON ou.id = e.org_unit_id
     WHERE c.resource_type = 'Observation' AND d.uid = c.resource_uid
  ) f ON true
  JOIN outbox_rule r ON r.kind = c.resource_type
  WHERE (r.skip_actors IS NULL OR NOT (c.actor = ANY (r.skip_actors)))
    AND (r.org_path IS NULL OR f.path = r.org_path OR f.path LIKE r.org_path || '/%')
    AND (r.stage_ids IS NULL OR f.stage IS NULL OR f.stage = ANY (r.stage_ids))
  ORDER BY c.id, r.target;
  RETURN NULL;
END
$$;

CREATE TRIGGER change_log_outbox AFTER INSERT ON change_log
  REFERENCING NEW TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION kiunga_outbox_from_change_log();
