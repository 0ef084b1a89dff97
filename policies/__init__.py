"""The shipped Rego policies (package data; nothing here is Python)."""
