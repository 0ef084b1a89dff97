"""The shipped examples: sidegate.yaml, envoy.yaml, rate-limit rules, API keys (package data)."""
