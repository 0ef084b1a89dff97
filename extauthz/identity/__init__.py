"""Who is calling: credential location, verifiers (jwt, api_key, introspection, anonymous)."""
