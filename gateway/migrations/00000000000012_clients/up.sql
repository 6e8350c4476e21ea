-- Security (#10): the API clients that may call the gateway, the access tokens they were given,
-- and the client-assertion ids already used (a replayed assertion is refused).

CREATE TABLE api_client (
  id               bigserial PRIMARY KEY,
  client_id        text NOT NULL UNIQUE CHECK (client_id ~ '^[A-Za-z0-9._-]{3,64}$'),
  name             text NOT NULL,
  -- argon2id PHC string of the secret (client_secret_basic); NULL for a client that signs.
  secret_hash      text,
  -- The public keys of a client that signs its assertions (private_key_jwt), as a JWKS.
  jwks             jsonb,
  -- SMART scopes the client may be granted, space separated (`system/Patient.rs system/*.r`).
  scopes           text NOT NULL,
  -- Org-unit UIDs whose subtrees it may write (capture) and find (search); empty: none.
  capture_org_units text[] NOT NULL DEFAULT '{}',
  search_org_units  text[] NOT NULL DEFAULT '{}',
  created_at       timestamptz NOT NULL DEFAULT now(),
  revoked_at       timestamptz,
  CHECK (secret_hash IS NOT NULL OR jwks IS NOT NULL)
);

-- Access tokens: only their SHA-256 is stored; the token itself exists only in the answer.
CREATE TABLE api_token (
  token_hash   bytea PRIMARY KEY,
  client_id    bigint NOT NULL REFERENCES api_client (id),
  scopes       text NOT NULL,
  issued_at    timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL
);
CREATE INDEX api_token_expires_idx ON api_token (expires_at);

-- `jti` of every accepted client assertion until it expires: the same assertion twice is a replay.
CREATE TABLE client_assertion_jti (
  client_id  bigint NOT NULL REFERENCES api_client (id),
  jti        text NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (client_id, jti)
);
