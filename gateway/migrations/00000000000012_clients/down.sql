DROP TABLE client_assertion_jti;
DROP TABLE api_token;
DROP TABLE api_client;
