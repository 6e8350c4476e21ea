DROP FUNCTION kiunga_outbox_enqueue_events(text[], text);
DROP FUNCTION kiunga_outbox_enqueue(text[], text[], text[], int4[], text, text);
