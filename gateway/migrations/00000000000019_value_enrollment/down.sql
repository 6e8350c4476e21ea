DROP TRIGGER event_values_follow ON event;
DROP FUNCTION kiunga_event_values_follow();
ALTER TABLE event_data_value DROP COLUMN enrollment_id;
