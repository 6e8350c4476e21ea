-- Security (#10): a record of every access to patient data, rendered as FHIR AuditEvent.
-- Append-only: rows are never changed or deleted by the gateway, and the trigger below refuses
-- anyone who tries through SQL (retention is an operator's decision: docs/security.md).

CREATE TABLE audit_event (
  id            bigserial PRIMARY KEY,
  recorded      timestamptz NOT NULL DEFAULT clock_timestamp(),
  request_id    text,
  -- Who asked: `client:<client_id>`, `anonymous` (development mode) or `system`.
  agent         text NOT NULL,
  -- FHIR AuditEvent.action: C R U D E.
  action        text NOT NULL CHECK (action IN ('C', 'R', 'U', 'D', 'E')),
  -- The RESTful interaction (read, search-type, create, ...) or the operation (`$match`).
  subtype       text NOT NULL,
  resource_type text,
  -- The request's query string, for searches and operations (who looked for whom).
  query         text,
  -- `Type/id` of every record written or returned, and of the people they belong to.
  entity        text[] NOT NULL DEFAULT '{}',
  patient       text[] NOT NULL DEFAULT '{}',
  -- NULL for a write's row, inserted before its answer existed (it committed: outcome 0).
  http_status   smallint,
  -- FHIR AuditEvent.outcome: 0 success, 4 minor failure (refused, not found), 8 serious failure.
  outcome       smallint NOT NULL CHECK (outcome IN (0, 4, 8, 12)),
  outcome_desc  text,
  source_ip     text,
  purpose       text
);
CREATE INDEX audit_event_recorded_idx ON audit_event (recorded);
CREATE INDEX audit_event_agent_idx ON audit_event (agent, recorded);
CREATE INDEX audit_event_entity_idx ON audit_event USING gin (entity);
CREATE INDEX audit_event_patient_idx ON audit_event USING gin (patient);

CREATE FUNCTION kiunga_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP;
END;
$$;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event
  FOR EACH ROW EXECUTE FUNCTION kiunga_audit_append_only();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
  FOR EACH STATEMENT EXECUTE FUNCTION kiunga_audit_append_only();
