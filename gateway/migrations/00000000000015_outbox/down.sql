DROP TABLE outbox_remote;
DROP TABLE outbox_item;
DROP TABLE outbox_rule;
