// Diesel table definitions, kept by hand in step with migrations/: no test compares them as such;
// a column missing here or typed wrongly fails the tests that read or write it.

diesel::table! {
    org_unit (id) {
        id -> Int8,
        uid -> Varchar,
        code -> Nullable<Text>,
        name -> Text,
        short_name -> Nullable<Text>,
        parent_id -> Nullable<Int8>,
        path -> Text,
        level -> Int4,
        opening_date -> Nullable<Date>,
        created -> Timestamptz,
        last_updated -> Timestamptz,
    }
}

diesel::table! {
    tracked_entity_type (id) {
        id -> Int8,
        uid -> Varchar,
        code -> Nullable<Text>,
        name -> Text,
    }
}

diesel::table! {
    option_set (id) {
        id -> Int8,
        uid -> Varchar,
        code -> Nullable<Text>,
        name -> Text,
        value_type -> Text,
    }
}

diesel::table! {
    option_value (id) {
        id -> Int8,
        uid -> Varchar,
        option_set_id -> Int8,
        code -> Text,
        name -> Text,
        sort_order -> Nullable<Int4>,
    }
}

diesel::table! {
    tracked_entity_attribute (id) {
        id -> Int8,
        uid -> Varchar,
        code -> Nullable<Text>,
        name -> Text,
        short_name -> Nullable<Text>,
        value_type -> Text,
        option_set_id -> Nullable<Int8>,
        is_unique -> Bool,
    }
}

diesel::table! {
    tracked_entity_type_attribute (tracked_entity_type_id, attribute_id) {
        tracked_entity_type_id -> Int8,
        attribute_id -> Int8,
    }
}

diesel::table! {
    data_element (id) {
        id -> Int8,
        uid -> Varchar,
        code -> Nullable<Text>,
        name -> Text,
        short_name -> Nullable<Text>,
        value_type -> Text,
        option_set_id -> Nullable<Int8>,
        unit -> Nullable<Text>,
    }
}

diesel::table! {
    program (id) {
        id -> Int8,
        uid -> Varchar,
        code -> Nullable<Text>,
        name -> Text,
        short_name -> Nullable<Text>,
        tracked_entity_type_id -> Int8,
        access_level -> Text,
        only_enroll_once -> Bool,
    }
}

diesel::table! {
    program_attribute (program_id, attribute_id) {
        program_id -> Int8,
        attribute_id -> Int8,
        mandatory -> Bool,
    }
}

diesel::table! {
    program_org_unit (program_id, org_unit_id) {
        program_id -> Int8,
        org_unit_id -> Int8,
    }
}

diesel::table! {
    program_stage (id) {
        id -> Int8,
        uid -> Varchar,
        code -> Nullable<Text>,
        name -> Text,
        program_id -> Int8,
        repeatable -> Bool,
        sort_order -> Nullable<Int4>,
    }
}

diesel::table! {
    program_stage_data_element (program_stage_id, data_element_id) {
        program_stage_id -> Int8,
        data_element_id -> Int8,
        compulsory -> Bool,
        sort_order -> Nullable<Int4>,
    }
}

diesel::table! {
    relationship_type (id) {
        id -> Int8,
        uid -> Varchar,
        code -> Nullable<Text>,
        name -> Text,
        from_to_name -> Nullable<Text>,
        to_from_name -> Nullable<Text>,
        bidirectional -> Bool,
        from_entity -> Text,
        from_tracked_entity_type_id -> Nullable<Int8>,
        from_program_id -> Nullable<Int8>,
        to_entity -> Text,
        to_tracked_entity_type_id -> Nullable<Int8>,
        to_program_id -> Nullable<Int8>,
    }
}

diesel::table! {
    tracked_entity (id) {
        id -> Int8,
        uid -> Varchar,
        tracked_entity_type_id -> Int8,
        org_unit_id -> Int8,
        inactive -> Bool,
        deleted -> Bool,
        version -> Int4,
        created -> Timestamptz,
        last_updated -> Timestamptz,
        merged_into_id -> Nullable<Int8>,
        linked -> Bool,
    }
}

diesel::table! {
    tracked_entity_attribute_value (tracked_entity_id, attribute_id) {
        tracked_entity_id -> Int8,
        attribute_id -> Int8,
        value -> Text,
        search_value -> Text,
        is_unique -> Bool,
        created -> Timestamptz,
        last_updated -> Timestamptz,
    }
}

diesel::table! {
    enrollment (id) {
        id -> Int8,
        uid -> Varchar,
        tracked_entity_id -> Int8,
        program_id -> Int8,
        org_unit_id -> Int8,
        status -> Text,
        enrolled_at -> Timestamptz,
        occurred_at -> Nullable<Timestamptz>,
        completed_at -> Nullable<Timestamptz>,
        deleted -> Bool,
        version -> Int4,
        created -> Timestamptz,
        last_updated -> Timestamptz,
    }
}

diesel::table! {
    event (id) {
        id -> Int8,
        uid -> Varchar,
        enrollment_id -> Int8,
        program_stage_id -> Int8,
        org_unit_id -> Int8,
        tracked_entity_id -> Int8,
        status -> Text,
        occurred_at -> Nullable<Timestamptz>,
        scheduled_at -> Nullable<Timestamptz>,
        completed_at -> Nullable<Timestamptz>,
        deleted -> Bool,
        version -> Int4,
        created -> Timestamptz,
        last_updated -> Timestamptz,
    }
}

diesel::table! {
    event_data_value (id) {
        id -> Int8,
        uid -> Varchar,
        event_id -> Int8,
        data_element_id -> Int8,
        tracked_entity_id -> Int8,
        value -> Text,
        value_num -> Nullable<Float8>,
        observed_at -> Nullable<Timestamptz>,
        deleted -> Bool,
        version -> Int4,
        created -> Timestamptz,
        last_updated -> Timestamptz,
        enrollment_id -> Int8,
        program_id -> Int8,
        owner_org_unit_id -> Int8,
    }
}

diesel::table! {
    relationship (id) {
        id -> Int8,
        uid -> Varchar,
        relationship_type_id -> Int8,
        from_tracked_entity_id -> Int8,
        to_tracked_entity_id -> Int8,
        deleted -> Bool,
        version -> Int4,
        created -> Timestamptz,
        last_updated -> Timestamptz,
        role_system -> Nullable<Text>,
        role_code -> Nullable<Text>,
        role_display -> Nullable<Text>,
        related_is_from -> Bool,
    }
}

diesel::table! {
    /// No primary key in the database; diesel needs one named, and these rows are only inserted,
    /// deleted by person and read by the lookup index.
    person_match_key (tracked_entity_id, kind, code) {
        tracked_entity_id -> Int8,
        kind -> Bpchar,
        code -> Text,
        year -> Nullable<Int4>,
        sv -> Nullable<Array<Text>>,
        hard -> Nullable<Bool>,
    }
}

diesel::table! {
    person_link (id) {
        id -> Int8,
        source_id -> Int8,
        target_id -> Int8,
        status -> Text,
        origin -> Text,
        score -> Float8,
        grade -> Text,
        ruleset -> Text,
        explanation -> Jsonb,
        created -> Timestamptz,
        last_updated -> Timestamptz,
        decided_by -> Nullable<Text>,
    }
}

diesel::table! {
    person_merge (id) {
        id -> Int8,
        source_id -> Int8,
        target_id -> Int8,
        merged_at -> Timestamptz,
        merged_by -> Text,
        undone_at -> Nullable<Timestamptz>,
        undone_by -> Nullable<Text>,
        moved -> Jsonb,
    }
}

diesel::table! {
    program_ownership (tracked_entity_id, program_id) {
        tracked_entity_id -> Int8,
        program_id -> Int8,
        org_unit_id -> Int8,
        last_updated -> Timestamptz,
    }
}

diesel::table! {
    program_ownership_history (id) {
        id -> Int8,
        tracked_entity_id -> Int8,
        program_id -> Int8,
        from_org_unit_id -> Nullable<Int8>,
        to_org_unit_id -> Int8,
        changed_at -> Timestamptz,
        changed_by -> Text,
        reason -> Nullable<Text>,
    }
}

diesel::table! {
    ownership_override (id) {
        id -> Int8,
        tracked_entity_id -> Int8,
        program_id -> Int8,
        actor -> Text,
        reason -> Text,
        granted_at -> Timestamptz,
        expires_at -> Timestamptz,
        request_id -> Nullable<Text>,
    }
}

diesel::table! {
    change_log (id) {
        id -> Int8,
        resource_type -> Text,
        resource_uid -> Varchar,
        version -> Int4,
        operation -> Text,
        changed_at -> Timestamptz,
        actor -> Text,
        request_id -> Nullable<Text>,
        mapping_version -> Nullable<Text>,
        state -> Nullable<Jsonb>,
    }
}

diesel::table! {
    inbound_log (id) {
        id -> Int8,
        received_at -> Timestamptz,
        request_id -> Nullable<Text>,
        actor -> Text,
        interaction -> Text,
        resource_type -> Text,
        resource_uid -> Nullable<Varchar>,
        content_type -> Text,
        body -> Bytea,
        mapping_version -> Nullable<Text>,
    }
}

diesel::joinable!(tracked_entity_attribute_value -> tracked_entity (tracked_entity_id));
diesel::joinable!(tracked_entity_attribute_value -> tracked_entity_attribute (attribute_id));
diesel::joinable!(tracked_entity -> org_unit (org_unit_id));
diesel::joinable!(option_value -> option_set (option_set_id));
diesel::joinable!(event -> org_unit (org_unit_id));
diesel::joinable!(event -> program_stage (program_stage_id));
diesel::joinable!(event -> enrollment (enrollment_id));
diesel::joinable!(enrollment -> program (program_id));
diesel::joinable!(event_data_value -> event (event_id));
diesel::joinable!(event_data_value -> data_element (data_element_id));

diesel::allow_tables_to_appear_in_same_query!(
    org_unit,
    tracked_entity_type,
    option_set,
    option_value,
    tracked_entity_attribute,
    tracked_entity_type_attribute,
    data_element,
    program,
    program_attribute,
    program_org_unit,
    program_stage,
    program_stage_data_element,
    relationship_type,
    tracked_entity,
    tracked_entity_attribute_value,
    enrollment,
    event,
    event_data_value,
    relationship,
    program_ownership,
    program_ownership_history,
    ownership_override,
    person_match_key,
    person_link,
    person_merge,
    change_log,
    inbound_log,
);

diesel::joinable!(event -> tracked_entity (tracked_entity_id));
diesel::joinable!(event_data_value -> tracked_entity (tracked_entity_id));
diesel::joinable!(enrollment -> tracked_entity (tracked_entity_id));

diesel::table! {
    external_ref (source, resource_type) {
        source -> Text,
        resource_type -> Text,
        uid -> Varchar,
        created -> Timestamptz,
    }
}

diesel::table! {
    api_client (id) {
        id -> Int8,
        client_id -> Text,
        name -> Text,
        secret_hash -> Nullable<Text>,
        jwks -> Nullable<Jsonb>,
        scopes -> Text,
        capture_org_units -> Array<Text>,
        search_org_units -> Array<Text>,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        programs -> Nullable<Array<Text>>,
    }
}

diesel::table! {
    api_token (token_hash) {
        token_hash -> Bytea,
        client_id -> Int8,
        scopes -> Text,
        issued_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    client_assertion_jti (client_id, jti) {
        client_id -> Int8,
        jti -> Text,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    audit_event (id) {
        id -> Int8,
        recorded -> Timestamptz,
        request_id -> Nullable<Text>,
        agent -> Text,
        action -> Text,
        subtype -> Text,
        resource_type -> Nullable<Text>,
        query -> Nullable<Text>,
        entity -> Array<Text>,
        patient -> Array<Text>,
        http_status -> Nullable<Int2>,
        outcome -> Int2,
        outcome_desc -> Nullable<Text>,
        source_ip -> Nullable<Text>,
        purpose -> Nullable<Text>,
    }
}

diesel::joinable!(api_token -> api_client (client_id));
diesel::allow_tables_to_appear_in_same_query!(api_token, api_client);

diesel::table! {
    outbox_rule (target, kind) {
        target -> Text,
        kind -> Text,
        org_path -> Nullable<Text>,
        stage_ids -> Nullable<Array<Int8>>,
        skip_actors -> Nullable<Array<Text>>,
        relationship_type_ids -> Nullable<Array<Int8>>,
        data_element_ids -> Nullable<Array<Int8>>,
        attribute_ids -> Nullable<Array<Int8>>,
    }
}

diesel::table! {
    outbox_item (id) {
        id -> Int8,
        target -> Text,
        kind -> Text,
        resource_uid -> Varchar,
        person_uid -> Varchar,
        operation -> Text,
        version -> Int4,
        created_at -> Timestamptz,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        lease_until -> Nullable<Timestamptz>,
        leased_by -> Nullable<Text>,
        uncertain -> Bool,
        last_attempt_at -> Nullable<Timestamptz>,
        delivered_at -> Nullable<Timestamptz>,
        error_kind -> Nullable<Text>,
        last_error -> Nullable<Text>,
        last_status -> Nullable<Int4>,
        remote_id -> Nullable<Text>,
        transaction_id -> Text,
    }
}

diesel::table! {
    outbox_remote (target, resource_type, resource_uid) {
        target -> Text,
        resource_type -> Text,
        resource_uid -> Varchar,
        remote_id -> Text,
        created_at -> Timestamptz,
    }
}
