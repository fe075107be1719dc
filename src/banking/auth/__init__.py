"""Users, password hashing (argon2), JWT access tokens and the actor behind a request."""
