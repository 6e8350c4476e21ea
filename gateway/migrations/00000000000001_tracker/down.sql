DROP TABLE inbound_log, change_log, program_ownership_history, program_ownership, relationship,
  event_data_value, event, enrollment, tracked_entity_attribute_value, tracked_entity, relationship_type,
  program_stage_data_element, program_stage, program_org_unit, program_attribute, program, data_element,
  tracked_entity_type_attribute, tracked_entity_attribute, option_value, option_set, tracked_entity_type,
  org_unit;
DROP FUNCTION kiunga_append_only();
DROP DOMAIN value_type;
DROP DOMAIN dhis_uid;
