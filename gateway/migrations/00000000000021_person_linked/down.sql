DROP TRIGGER relationship_marks_linked ON relationship;
DROP TRIGGER person_link_marks_linked ON person_link;
DROP FUNCTION kiunga_person_linked();
ALTER TABLE tracked_entity DROP COLUMN linked;
