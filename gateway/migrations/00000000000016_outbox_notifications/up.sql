-- A birth or a death is notified once per target: two writes completing a birth at the same time
-- (the delivery Encounter and the mother's record) must not queue two notifications.
CREATE UNIQUE INDEX outbox_item_one_notification ON outbox_item (target, kind, person_uid)
  WHERE kind IN ('birth', 'death');
