-- Outbound push (docs/outbound.md). A write that a target's triggers select adds an outbox row in
-- the same transaction as the write itself; workers deliver the rows afterwards.

-- The triggers of every enabled target, written from mappings/targets/*.toml at start-up and on
-- reload. `kind` is a resource type (Patient, Encounter, Observation) or a notification (birth,
-- death). NULL arrays and paths mean "any".
CREATE TABLE outbox_rule (
  target                text NOT NULL,
  kind                  text NOT NULL,
  org_path              text,
  stage_ids             bigint[],
  skip_actors           text[],
  -- birth: the mother relationship, the delivery stages and the birth-weight data elements
  -- that must all exist; death: the attribute that marks death, and the cause-of-death data
  -- elements (one must hold a value).
  relationship_type_ids bigint[],
  data_element_ids      bigint[],
  attribute_ids         bigint[],
  PRIMARY KEY (target, kind)
);

CREATE TABLE outbox_item (
  id              bigserial PRIMARY KEY,
  target          text NOT NULL,
  -- Patient | Encounter | Observation | birth | death
  kind            text NOT NULL,
  resource_uid    varchar NOT NULL,
  -- Items of one person go out in id order (a Patient before its Encounters); other people's
  -- items do not wait for them.
  person_uid      varchar NOT NULL,
  operation       text NOT NULL CHECK (operation IN ('create', 'update', 'delete', 'notify')),
  version         integer NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  status          text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'delivered', 'dead', 'unknown', 'skipped')),
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  -- Set while a worker holds the item. A lease found expired means its worker died while
  -- delivering: the outcome of that attempt is unknown.
  lease_until     timestamptz,
  leased_by       text,
  -- The last attempt may have reached the target (timeout or reset after sending): look the
  -- record up on the target before sending again.
  uncertain       boolean NOT NULL DEFAULT false,
  last_attempt_at timestamptz,
  delivered_at    timestamptz,
  -- transient | rejected | unsupported | unknown-outcome | skipped-by-operator | ...
  error_kind      text,
  -- The target's own message (it never holds the record's content).
  last_error      text,
  last_status     integer,
  remote_id       text,
  -- A derived idempotency key for targets that honour one (OpenCRVS events API transactionId).
  transaction_id  text NOT NULL DEFAULT gen_random_uuid()::text
);

-- What a worker claims: due pending items of one target.
CREATE INDEX outbox_item_due ON outbox_item (target, next_attempt_at, id) WHERE status = 'pending';
-- What holds a person's later items back: her earlier items not yet settled.
CREATE INDEX outbox_item_open_person ON outbox_item (target, person_uid, id)
  WHERE status IN ('pending', 'dead', 'unknown');
CREATE INDEX outbox_item_resource ON outbox_item (target, kind, resource_uid);
CREATE INDEX outbox_item_created ON outbox_item (created_at);

-- Local record -> the id the target gave it. Updates go to that id; a record is created once.
CREATE TABLE outbox_remote (
  target        text NOT NULL,
  resource_type text NOT NULL,
  resource_uid  varchar NOT NULL,
  remote_id     text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (target, resource_type, resource_uid)
);
