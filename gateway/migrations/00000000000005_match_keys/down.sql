DROP TABLE person_match_key;
