DROP TABLE external_ref;
