DROP TRIGGER api_token_changed ON api_token;
DROP TRIGGER api_client_changed ON api_client;
DROP FUNCTION kiunga_clients_changed();
DROP FUNCTION kiunga_enrollment_visible(bigint, bigint[], bigint[], bigint[], bigint[], text, bigint[]);
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
ALTER TABLE api_client DROP COLUMN programs;
