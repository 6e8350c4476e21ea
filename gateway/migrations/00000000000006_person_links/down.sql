DROP TABLE person_link;
