DROP TABLE audit_event;
DROP FUNCTION kiunga_audit_append_only();
