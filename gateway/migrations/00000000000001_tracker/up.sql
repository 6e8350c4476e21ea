-- The tracker model, after DHIS2 Tracker: metadata (org units, entity types, attributes, option sets,
-- programs, stages, data elements, relationship types) and data (tracked entities, attribute values,
-- enrollments, events, data values, relationships, ownership), plus the change log and inbound log.
-- Every table has a surrogate bigint key for joins and an 11-character DHIS2 UID that is the public id.

CREATE DOMAIN dhis_uid AS varchar(11) CHECK (VALUE ~ '^[A-Za-z][A-Za-z0-9]{10}$');

CREATE DOMAIN value_type AS text CHECK (VALUE IN (
  'TEXT', 'LONG_TEXT', 'MULTI_TEXT', 'LETTER', 'PHONE_NUMBER', 'EMAIL', 'BOOLEAN', 'TRUE_ONLY',
  'DATE', 'DATETIME', 'TIME', 'NUMBER', 'UNIT_INTERVAL', 'PERCENTAGE', 'INTEGER', 'INTEGER_POSITIVE',
  'INTEGER_NEGATIVE', 'INTEGER_ZERO_OR_POSITIVE', 'TRACKER_ASSOCIATE', 'USERNAME', 'COORDINATE',
  'ORGANISATION_UNIT', 'REFERENCE', 'AGE', 'URL', 'FILE_RESOURCE', 'IMAGE', 'GEOJSON'));

CREATE TABLE org_unit (
  id           bigserial PRIMARY KEY,
  uid          dhis_uid NOT NULL UNIQUE,
  code         text UNIQUE,
  name         text NOT NULL,
  short_name   text,
  parent_id    bigint REFERENCES org_unit (id),
  -- Materialised path of UIDs, DHIS2 style: '/root/district/facility'. Scope checks are prefix matches.
  path         text NOT NULL UNIQUE,
  level        integer NOT NULL CHECK (level >= 1),
  opening_date date,
  created      timestamptz NOT NULL DEFAULT now(),
  last_updated timestamptz NOT NULL DEFAULT now(),
  CHECK ((parent_id IS NULL) = (level = 1))
);
CREATE INDEX org_unit_path_idx ON org_unit (path text_pattern_ops);
CREATE INDEX org_unit_parent_idx ON org_unit (parent_id);
CREATE INDEX org_unit_name_idx ON org_unit (lower(name) text_pattern_ops);

CREATE TABLE tracked_entity_type (
  id   bigserial PRIMARY KEY,
  uid  dhis_uid NOT NULL UNIQUE,
  code text UNIQUE,
  name text NOT NULL UNIQUE
);

CREATE TABLE option_set (
  id         bigserial PRIMARY KEY,
  uid        dhis_uid NOT NULL UNIQUE,
  code       text UNIQUE,
  name       text NOT NULL,
  value_type value_type NOT NULL
);

CREATE TABLE option_value (
  id            bigserial PRIMARY KEY,
  uid           dhis_uid NOT NULL UNIQUE,
  option_set_id bigint NOT NULL REFERENCES option_set (id) ON DELETE CASCADE,
  code          text NOT NULL,
  name          text NOT NULL,
  sort_order    integer,
  UNIQUE (option_set_id, code)
);

CREATE TABLE tracked_entity_attribute (
  id            bigserial PRIMARY KEY,
  uid           dhis_uid NOT NULL UNIQUE,
  code          text UNIQUE,
  name          text NOT NULL,
  short_name    text,
  value_type    value_type NOT NULL,
  option_set_id bigint REFERENCES option_set (id),
  is_unique     boolean NOT NULL DEFAULT false
);

CREATE TABLE tracked_entity_type_attribute (
  tracked_entity_type_id bigint NOT NULL REFERENCES tracked_entity_type (id) ON DELETE CASCADE,
  attribute_id           bigint NOT NULL REFERENCES tracked_entity_attribute (id) ON DELETE CASCADE,
  PRIMARY KEY (tracked_entity_type_id, attribute_id)
);

CREATE TABLE data_element (
  id            bigserial PRIMARY KEY,
  uid           dhis_uid NOT NULL UNIQUE,
  code          text UNIQUE,
  name          text NOT NULL,
  short_name    text,
  value_type    value_type NOT NULL,
  option_set_id bigint REFERENCES option_set (id),
  -- UCUM unit the stored number is expressed in (DHIS2 keeps it in a metadata attribute).
  unit          text
);

CREATE TABLE program (
  id                     bigserial PRIMARY KEY,
  uid                    dhis_uid NOT NULL UNIQUE,
  code                   text UNIQUE,
  name                   text NOT NULL,
  short_name             text,
  tracked_entity_type_id bigint NOT NULL REFERENCES tracked_entity_type (id),
  access_level           text NOT NULL DEFAULT 'OPEN'
                         CHECK (access_level IN ('OPEN', 'AUDITED', 'PROTECTED', 'CLOSED')),
  only_enroll_once       boolean NOT NULL DEFAULT false
);

CREATE TABLE program_attribute (
  program_id   bigint NOT NULL REFERENCES program (id) ON DELETE CASCADE,
  attribute_id bigint NOT NULL REFERENCES tracked_entity_attribute (id) ON DELETE CASCADE,
  mandatory    boolean NOT NULL DEFAULT false,
  PRIMARY KEY (program_id, attribute_id)
);

CREATE TABLE program_org_unit (
  program_id  bigint NOT NULL REFERENCES program (id) ON DELETE CASCADE,
  org_unit_id bigint NOT NULL REFERENCES org_unit (id) ON DELETE CASCADE,
  PRIMARY KEY (program_id, org_unit_id)
);

CREATE TABLE program_stage (
  id         bigserial PRIMARY KEY,
  uid        dhis_uid NOT NULL UNIQUE,
  code       text UNIQUE,
  name       text NOT NULL,
  program_id bigint NOT NULL REFERENCES program (id) ON DELETE CASCADE,
  repeatable boolean NOT NULL DEFAULT false,
  sort_order integer
);

CREATE TABLE program_stage_data_element (
  program_stage_id bigint NOT NULL REFERENCES program_stage (id) ON DELETE CASCADE,
  data_element_id  bigint NOT NULL REFERENCES data_element (id) ON DELETE CASCADE,
  compulsory       boolean NOT NULL DEFAULT false,
  sort_order       integer,
  PRIMARY KEY (program_stage_id, data_element_id)
);

CREATE TABLE relationship_type (
  id                          bigserial PRIMARY KEY,
  uid                         dhis_uid NOT NULL UNIQUE,
  code                        text UNIQUE,
  name                        text NOT NULL,
  from_to_name                text,
  to_from_name                text,
  bidirectional               boolean NOT NULL DEFAULT false,
  from_entity                 text NOT NULL CHECK (from_entity IN
                              ('TRACKED_ENTITY_INSTANCE', 'PROGRAM_INSTANCE', 'PROGRAM_STAGE_INSTANCE')),
  from_tracked_entity_type_id bigint REFERENCES tracked_entity_type (id),
  from_program_id             bigint REFERENCES program (id),
  to_entity                   text NOT NULL CHECK (to_entity IN
                              ('TRACKED_ENTITY_INSTANCE', 'PROGRAM_INSTANCE', 'PROGRAM_STAGE_INSTANCE')),
  to_tracked_entity_type_id   bigint REFERENCES tracked_entity_type (id),
  to_program_id               bigint REFERENCES program (id)
);

-- ---------------------------------------------------------------------------------------------------
-- Data. Rows are soft-deleted (deleted = true) so that FHIR can answer 410 Gone and history stays.

CREATE TABLE tracked_entity (
  id                     bigserial PRIMARY KEY,
  uid                    dhis_uid NOT NULL UNIQUE,
  tracked_entity_type_id bigint NOT NULL REFERENCES tracked_entity_type (id),
  -- The org unit that registered the person and owns the record outside any program.
  org_unit_id            bigint NOT NULL REFERENCES org_unit (id),
  inactive               boolean NOT NULL DEFAULT false,
  deleted                boolean NOT NULL DEFAULT false,
  version                integer NOT NULL DEFAULT 1 CHECK (version >= 1),
  created                timestamptz NOT NULL DEFAULT now(),
  last_updated           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tracked_entity_org_unit_idx ON tracked_entity (org_unit_id);
CREATE INDEX tracked_entity_last_updated_idx ON tracked_entity (last_updated);

CREATE TABLE tracked_entity_attribute_value (
  tracked_entity_id bigint NOT NULL REFERENCES tracked_entity (id) ON DELETE CASCADE,
  attribute_id      bigint NOT NULL REFERENCES tracked_entity_attribute (id),
  value             text NOT NULL CHECK (value <> ''),
  -- Lower-case, accent-free form of value for FHIR string search (computed by the gateway).
  search_value      text NOT NULL,
  -- Copied from the attribute's unique flag so that a partial unique index can enforce it.
  is_unique         boolean NOT NULL DEFAULT false,
  created           timestamptz NOT NULL DEFAULT now(),
  last_updated      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tracked_entity_id, attribute_id)
);
CREATE UNIQUE INDEX teav_unique_value_idx ON tracked_entity_attribute_value (attribute_id, value) WHERE is_unique;
CREATE INDEX teav_value_idx ON tracked_entity_attribute_value (attribute_id, value);
CREATE INDEX teav_search_idx ON tracked_entity_attribute_value (attribute_id, search_value text_pattern_ops);

CREATE TABLE enrollment (
  id                bigserial PRIMARY KEY,
  uid               dhis_uid NOT NULL UNIQUE,
  tracked_entity_id bigint NOT NULL REFERENCES tracked_entity (id),
  program_id        bigint NOT NULL REFERENCES program (id),
  org_unit_id       bigint NOT NULL REFERENCES org_unit (id),
  status            text NOT NULL CHECK (status IN ('ACTIVE', 'COMPLETED', 'CANCELLED')),
  enrolled_at       timestamptz NOT NULL,
  occurred_at       timestamptz,
  completed_at      timestamptz,
  deleted           boolean NOT NULL DEFAULT false,
  version           integer NOT NULL DEFAULT 1 CHECK (version >= 1),
  created           timestamptz NOT NULL DEFAULT now(),
  last_updated      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX enrollment_one_active_idx ON enrollment (tracked_entity_id, program_id)
  WHERE status = 'ACTIVE' AND NOT deleted;
CREATE INDEX enrollment_tracked_entity_idx ON enrollment (tracked_entity_id);
CREATE INDEX enrollment_org_unit_idx ON enrollment (org_unit_id);

CREATE TABLE event (
  id                bigserial PRIMARY KEY,
  uid               dhis_uid NOT NULL UNIQUE,
  enrollment_id     bigint NOT NULL REFERENCES enrollment (id),
  program_stage_id  bigint NOT NULL REFERENCES program_stage (id),
  org_unit_id       bigint NOT NULL REFERENCES org_unit (id),
  -- Denormalised from the enrollment: Encounter searches by patient are the common case.
  tracked_entity_id bigint NOT NULL REFERENCES tracked_entity (id),
  status            text NOT NULL CHECK (status IN ('ACTIVE', 'COMPLETED', 'VISITED', 'SCHEDULE', 'OVERDUE', 'SKIPPED')),
  occurred_at       timestamptz,
  scheduled_at      timestamptz,
  completed_at      timestamptz,
  deleted           boolean NOT NULL DEFAULT false,
  version           integer NOT NULL DEFAULT 1 CHECK (version >= 1),
  created           timestamptz NOT NULL DEFAULT now(),
  last_updated      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_tracked_entity_idx ON event (tracked_entity_id, occurred_at);
CREATE INDEX event_enrollment_idx ON event (enrollment_id);
CREATE INDEX event_stage_idx ON event (program_stage_id, occurred_at);
CREATE INDEX event_org_unit_idx ON event (org_unit_id);

-- One row per FHIR Observation. Unlike DHIS2 an event may hold several values of one data element
-- (two weights taken in one visit), each with its own id, time and version.
CREATE TABLE event_data_value (
  id                bigserial PRIMARY KEY,
  uid               dhis_uid NOT NULL UNIQUE,
  event_id          bigint NOT NULL REFERENCES event (id),
  data_element_id   bigint NOT NULL REFERENCES data_element (id),
  tracked_entity_id bigint NOT NULL REFERENCES tracked_entity (id),
  value             text NOT NULL CHECK (value <> ''),
  value_num         double precision,
  observed_at       timestamptz,
  deleted           boolean NOT NULL DEFAULT false,
  version           integer NOT NULL DEFAULT 1 CHECK (version >= 1),
  created           timestamptz NOT NULL DEFAULT now(),
  last_updated      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX edv_event_idx ON event_data_value (event_id);
CREATE INDEX edv_patient_element_idx ON event_data_value (tracked_entity_id, data_element_id, observed_at);
CREATE INDEX edv_element_value_idx ON event_data_value (data_element_id, value_num);

CREATE TABLE relationship (
  id                     bigserial PRIMARY KEY,
  uid                    dhis_uid NOT NULL UNIQUE,
  relationship_type_id   bigint NOT NULL REFERENCES relationship_type (id),
  from_tracked_entity_id bigint NOT NULL REFERENCES tracked_entity (id),
  to_tracked_entity_id   bigint NOT NULL REFERENCES tracked_entity (id),
  deleted                boolean NOT NULL DEFAULT false,
  version                integer NOT NULL DEFAULT 1 CHECK (version >= 1),
  created                timestamptz NOT NULL DEFAULT now(),
  last_updated           timestamptz NOT NULL DEFAULT now(),
  CHECK (from_tracked_entity_id <> to_tracked_entity_id)
);
CREATE INDEX relationship_from_idx ON relationship (from_tracked_entity_id);
CREATE INDEX relationship_to_idx ON relationship (to_tracked_entity_id);

CREATE TABLE program_ownership (
  tracked_entity_id bigint NOT NULL REFERENCES tracked_entity (id),
  program_id        bigint NOT NULL REFERENCES program (id),
  org_unit_id       bigint NOT NULL REFERENCES org_unit (id),
  last_updated      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tracked_entity_id, program_id)
);
CREATE INDEX program_ownership_org_unit_idx ON program_ownership (org_unit_id);

CREATE TABLE program_ownership_history (
  id                 bigserial PRIMARY KEY,
  tracked_entity_id  bigint NOT NULL REFERENCES tracked_entity (id),
  program_id         bigint NOT NULL REFERENCES program (id),
  from_org_unit_id   bigint REFERENCES org_unit (id),
  to_org_unit_id     bigint NOT NULL REFERENCES org_unit (id),
  changed_at         timestamptz NOT NULL DEFAULT now(),
  changed_by         text NOT NULL,
  reason             text
);
CREATE INDEX program_ownership_history_te_idx ON program_ownership_history (tracked_entity_id, program_id);

-- ---------------------------------------------------------------------------------------------------
-- Logs. Both are append-only: a trigger refuses UPDATE and DELETE.

CREATE FUNCTION kiunga_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;

-- One row per version of every FHIR-visible record. `state` is the tracker-level snapshot (org unit,
-- attribute values...) after the change, so old versions render through the same code as current ones.
CREATE TABLE change_log (
  id              bigserial PRIMARY KEY,
  resource_type   text NOT NULL,
  resource_uid    dhis_uid NOT NULL,
  version         integer NOT NULL CHECK (version >= 1),
  operation       text NOT NULL CHECK (operation IN ('create', 'update', 'delete')),
  changed_at      timestamptz NOT NULL DEFAULT now(),
  actor           text NOT NULL,
  request_id      text,
  mapping_version text,
  state           jsonb,
  UNIQUE (resource_type, resource_uid, version)
);
CREATE INDEX change_log_type_time_idx ON change_log (resource_type, changed_at);
CREATE TRIGGER change_log_append_only BEFORE UPDATE OR DELETE ON change_log
  FOR EACH ROW EXECUTE FUNCTION kiunga_append_only();

-- The original bytes of every accepted write, kept so that records can be re-mapped later.
CREATE TABLE inbound_log (
  id              bigserial PRIMARY KEY,
  received_at     timestamptz NOT NULL DEFAULT now(),
  request_id      text,
  actor           text NOT NULL,
  interaction     text NOT NULL,
  resource_type   text NOT NULL,
  resource_uid    dhis_uid,
  content_type    text NOT NULL,
  body            bytea NOT NULL,
  mapping_version text
);
CREATE INDEX inbound_log_resource_idx ON inbound_log (resource_type, resource_uid);
CREATE TRIGGER inbound_log_append_only BEFORE UPDATE OR DELETE ON inbound_log
  FOR EACH ROW EXECUTE FUNCTION kiunga_append_only();
