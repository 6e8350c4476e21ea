DROP TRIGGER change_log_outbox ON change_log;
DROP FUNCTION kiunga_outbox_from_change_log();
CREATE INDEX outbox_item_resource ON outbox_item (target, kind, resource_uid);
CREATE INDEX outbox_item_created ON outbox_item (created_at);
