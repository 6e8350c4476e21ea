CREATE INDEX edv_event_idx ON event_data_value (event_id);
DROP INDEX teav_digits_idx;
CREATE INDEX teav_digits_idx ON tracked_entity_attribute_value (attribute_id, regexp_replace(value, '\D', '', 'g'));
DROP INDEX teav_date_idx;
CREATE INDEX teav_date_idx ON tracked_entity_attribute_value (attribute_id, kiunga_date_lo(value), kiunga_date_hi(value));
