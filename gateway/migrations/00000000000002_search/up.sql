-- FHIR date search over partial dates held as text (`1990`, `1990-04`, `1990-04-12`): the first day
-- of the range and the day after its end. NULL for text that is not such a date, so the functions
-- are safe on every attribute value and can back expression indexes.
CREATE FUNCTION kiunga_date_lo(v text) RETURNS date LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN v ~ '^\d{4}$' THEN make_date(v::int, 1, 1)
    WHEN v ~ '^\d{4}-\d{2}$' THEN make_date(substr(v, 1, 4)::int, substr(v, 6, 2)::int, 1)
    WHEN v ~ '^\d{4}-\d{2}-\d{2}$' THEN make_date(substr(v, 1, 4)::int, substr(v, 6, 2)::int, substr(v, 9, 2)::int)
  END
$$;

CREATE FUNCTION kiunga_date_hi(v text) RETURNS date LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN v ~ '^\d{4}$' THEN make_date(v::int + 1, 1, 1)
    WHEN v ~ '^\d{4}-\d{2}$' THEN (make_date(substr(v, 1, 4)::int, substr(v, 6, 2)::int, 1) + interval '1 month')::date
    WHEN v ~ '^\d{4}-\d{2}-\d{2}$' THEN make_date(substr(v, 1, 4)::int, substr(v, 6, 2)::int, substr(v, 9, 2)::int) + 1
  END
$$;

CREATE INDEX teav_date_idx ON tracked_entity_attribute_value (attribute_id, kiunga_date_lo(value), kiunga_date_hi(value));
-- Phone search compares digits only.
CREATE INDEX teav_digits_idx ON tracked_entity_attribute_value (attribute_id, regexp_replace(value, '\D', '', 'g'));
CREATE INDEX event_data_value_event_element_idx ON event_data_value (event_id, data_element_id);
CREATE INDEX event_data_value_element_time_idx ON event_data_value (data_element_id, observed_at);

-- The logs are append-only against TRUNCATE too.
CREATE TRIGGER change_log_no_truncate BEFORE TRUNCATE ON change_log
  FOR EACH STATEMENT EXECUTE FUNCTION kiunga_append_only();
CREATE TRIGGER inbound_log_no_truncate BEFORE TRUNCATE ON inbound_log
  FOR EACH STATEMENT EXECUTE FUNCTION kiunga_append_only();
