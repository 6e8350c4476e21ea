-- Candidates of a person who holds a national ID (more exactly: a value of the registry's
-- primary single-valued system, the first `single_valued` and `unique` identifier system of
-- mappings/patient.toml) are never people holding another value there: the engine's hard rule
-- calls those certainly not, and people holding the same value are found through the
-- identifier itself. So the keys of such holders (`hard`) get an index of their own, which a
-- query that holds a value there does not read at all. In a registry where most people have a
-- national ID this is most of every key's entries (profiled: the look-up was most of the cost
-- of matching on create). `hard` is written with the keys; NULL (keys written before this
-- migration) counts as not holding one, so nobody is missed until `kiunga match-keys` runs.
ALTER TABLE person_match_key ADD COLUMN hard boolean;

DROP INDEX person_match_key_lookup_idx;
CREATE INDEX person_match_key_soft_idx ON person_match_key (kind, code, year, tracked_entity_id)
  INCLUDE (sv) WHERE hard IS NOT TRUE;
CREATE INDEX person_match_key_hard_idx ON person_match_key (kind, code, year, tracked_entity_id)
  INCLUDE (sv) WHERE hard;

DROP FUNCTION kiunga_match_candidates(int4[], text[], text[], int4[], int4, int8, int4[], int8[],
  text[], int8[], int4[], text[]);

-- As in migration 7, with `hq`: whether each query person holds a value of the primary system.
-- Each branch reads the two indexes apart (a partial index serves only a predicate it implies);
-- the second only for query people without such a value.
CREATE FUNCTION kiunga_match_candidates(
  qs int4[], kinds text[], codes text[], years int4[], win int4, maxn int8,
  iq int4[], ia int8[], iv text[], excl int8[], svq int4[], svv text[], hq bool[])
RETURNS TABLE (q int4, id int8)
-- One plan for every call. Left to choose, Postgres planned the query afresh on every call
-- (its custom plans looked no dearer than the generic one), and planning this statement takes
-- 3 to 5 ms where running it takes well under one: measured, that was most of what matching
-- cost a Patient create.
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH qk AS (
    SELECT t.q, t.kind::char(1) AS kind, t.code, NULLIF(t.year, -1) AS year,
           COALESCE(hq[t.q + 1], false) AS hard
    FROM unnest(qs, kinds, codes, years) AS t(q, kind, code, year)
  ), qsv AS (
    SELECT s.q, array_agg(s.v) AS sv FROM unnest(svq, svv) AS s(q, v) GROUP BY s.q
  ), k AS (
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.hard IS NOT TRUE AND p.kind = 'n' AND p.code = qk.code AND p.year BETWEEN qk.year - win AND qk.year + win
      LIMIT maxn) m
    WHERE qk.kind = 'n' AND qk.year IS NOT NULL
    UNION ALL
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.hard AND p.kind = 'n' AND p.code = qk.code AND p.year BETWEEN qk.year - win AND qk.year + win
      LIMIT maxn) m
    WHERE qk.kind = 'n' AND qk.year IS NOT NULL AND NOT qk.hard
    UNION ALL
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.hard IS NOT TRUE AND p.kind = 'n' AND p.code = qk.code AND p.year IS NULL
      LIMIT maxn) m
    WHERE qk.kind = 'n' AND qk.year IS NOT NULL
    UNION ALL
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.hard AND p.kind = 'n' AND p.code = qk.code AND p.year IS NULL
      LIMIT maxn) m
    WHERE qk.kind = 'n' AND qk.year IS NOT NULL AND NOT qk.hard
    UNION ALL
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.hard IS NOT TRUE AND p.kind = 'n' AND p.code = qk.code
      LIMIT maxn) m
    WHERE qk.kind = 'n' AND qk.year IS NULL
    UNION ALL
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.hard AND p.kind = 'n' AND p.code = qk.code
      LIMIT maxn) m
    WHERE qk.kind = 'n' AND qk.year IS NULL AND NOT qk.hard
    UNION ALL
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.hard IS NOT TRUE AND p.kind = qk.kind AND p.code = qk.code
      LIMIT maxn) m
    WHERE qk.kind <> 'n'
    UNION ALL
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.hard AND p.kind = qk.kind AND p.code = qk.code
      LIMIT maxn) m
    WHERE qk.kind <> 'n' AND NOT qk.hard
  ), hits AS (
    SELECT k.q, k.id, count(*) AS n FROM k LEFT JOIN qsv ON qsv.q = k.q
    WHERE k.id <> excl[k.q + 1]
      AND NOT COALESCE(cardinality(k.sv) = 1 AND cardinality(qsv.sv) = 1
               AND split_part(k.sv[1], '|', 1) = split_part(qsv.sv[1], '|', 1)
               AND k.sv[1] <> qsv.sv[1], false)
    GROUP BY k.q, k.id
  ), ranked AS (
    SELECT h.q, h.id, row_number() OVER (PARTITION BY h.q ORDER BY h.n DESC, h.id) AS r
    FROM hits h
  )
  SELECT ranked.q, ranked.id FROM ranked WHERE ranked.r <= maxn
  UNION
  SELECT h.q, v.tracked_entity_id
  FROM unnest(iq, ia, iv) AS h(q, attribute_id, value)
  JOIN tracked_entity_attribute_value v ON v.attribute_id = h.attribute_id AND v.value = h.value
  WHERE v.tracked_entity_id <> excl[h.q + 1];
END
$$;
