"""API keys: records stored by digest only, a YAML file store, a Redis store, the verifier."""
