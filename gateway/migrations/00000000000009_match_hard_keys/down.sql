DROP FUNCTION kiunga_match_candidates(int4[], text[], text[], int4[], int4, int8, int4[], int8[],
  text[], int8[], int4[], text[], bool[]);
DROP INDEX person_match_key_hard_idx;
DROP INDEX person_match_key_soft_idx;
CREATE INDEX person_match_key_lookup_idx ON person_match_key (kind, code, year, tracked_entity_id)
  INCLUDE (sv);
ALTER TABLE person_match_key DROP COLUMN hard;

-- Migration 7's function again.
CREATE FUNCTION kiunga_match_candidates(
  qs int4[], kinds text[], codes text[], years int4[], win int4, maxn int8,
  iq int4[], ia int8[], iv text[], excl int8[], svq int4[], svv text[])
RETURNS TABLE (q int4, id int8)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH qk AS (
    SELECT t.q, t.kind::char(1) AS kind, t.code, NULLIF(t.year, -1) AS year
    FROM unnest(qs, kinds, codes, years) AS t(q, kind, code, year)
  ), qsv AS (
    SELECT s.q, array_agg(s.v) AS sv FROM unnest(svq, svv) AS s(q, v) GROUP BY s.q
  ), k AS (
    -- One index range per branch (an OR across them would read a whole name code), each read
    -- up to `maxn` rows: a key that common says little, and the cost stays bounded at any size.
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.kind = 'n' AND p.code = qk.code AND p.year BETWEEN qk.year - win AND qk.year + win
      LIMIT maxn) m
    WHERE qk.kind = 'n' AND qk.year IS NOT NULL
    UNION ALL
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.kind = 'n' AND p.code = qk.code AND p.year IS NULL
      LIMIT maxn) m
    WHERE qk.kind = 'n' AND qk.year IS NOT NULL
    UNION ALL
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.kind = 'n' AND p.code = qk.code
      LIMIT maxn) m
    WHERE qk.kind = 'n' AND qk.year IS NULL
    UNION ALL
    SELECT qk.q, m.id, m.sv FROM qk CROSS JOIN LATERAL (
      SELECT p.tracked_entity_id AS id, p.sv FROM person_match_key p
      WHERE p.kind = qk.kind AND p.code = qk.code
      LIMIT maxn) m
    WHERE qk.kind <> 'n'
  ), hits AS (
    SELECT k.q, k.id, count(*) AS n FROM k LEFT JOIN qsv ON qsv.q = k.q
    WHERE k.id <> excl[k.q + 1]
      -- One value each in the same system (a national ID), and not the same value. People with
      -- several such systems are left to the engine's hard rule after they are read.
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
