-- Security (#10): program access per API client, as DHIS2 gives users program access. NULL: every
-- program (clients registered before this migration keep what they had).
ALTER TABLE api_client ADD COLUMN programs text[];

-- The ownership rule of migration 10 with the caller's programs: program data of a program the
-- caller has no access to is not visible, whoever owns it. Replaces the six-argument form, and
-- is PL/pgSQL now: a SQL function that cannot be inlined is planned afresh on every call (once
-- per row of a search, 50 to 70 µs each); PL/pgSQL keeps its plans for the session.
DROP FUNCTION kiunga_enrollment_visible(bigint, bigint[], bigint[], bigint[], bigint[], text);
CREATE FUNCTION kiunga_enrollment_visible(p_enrollment bigint, p_search bigint[], p_capture bigint[],
                                          p_open bigint[], p_protected bigint[], p_actor text,
                                          p_programs bigint[])
RETURNS boolean LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  r record;
BEGIN
  SELECT en.tracked_entity_id, en.program_id, COALESCE(po.org_unit_id, en.org_unit_id) AS owner
    INTO r
    FROM enrollment en
    LEFT JOIN program_ownership po
      ON po.tracked_entity_id = en.tracked_entity_id AND po.program_id = en.program_id
   WHERE en.id = p_enrollment;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF NOT (r.program_id = ANY (p_programs)) THEN
    RETURN false;
  END IF;
  IF r.owner = ANY (p_capture) THEN
    RETURN true;
  END IF;
  IF r.program_id = ANY (p_open) THEN
    RETURN r.owner = ANY (p_search);
  END IF;
  IF r.program_id = ANY (p_protected) THEN
    RETURN EXISTS (SELECT 1 FROM ownership_override o
                    WHERE o.actor = p_actor AND o.tracked_entity_id = r.tracked_entity_id
                      AND o.program_id = r.program_id AND o.expires_at > now());
  END IF;
  RETURN false;
END;
$$;

-- A change to a client or a token, by any process, tells every gateway when it commits: their
-- caches of token principals (auth/cache.rs) are emptied, so a revocation takes effect at once.
CREATE FUNCTION kiunga_clients_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('kiunga_clients', '');
  RETURN NULL;
END;
$$;
CREATE TRIGGER api_client_changed AFTER UPDATE OR DELETE OR TRUNCATE ON api_client
  FOR EACH STATEMENT EXECUTE FUNCTION kiunga_clients_changed();
CREATE TRIGGER api_token_changed AFTER UPDATE OR DELETE OR TRUNCATE ON api_token
  FOR EACH STATEMENT EXECUTE FUNCTION kiunga_clients_changed();
