DROP TRIGGER inbound_log_no_truncate ON inbound_log;
DROP TRIGGER change_log_no_truncate ON change_log;
DROP INDEX event_data_value_element_time_idx, event_data_value_event_element_idx, teav_digits_idx, teav_date_idx;
DROP FUNCTION kiunga_date_hi(text);
DROP FUNCTION kiunga_date_lo(text);
