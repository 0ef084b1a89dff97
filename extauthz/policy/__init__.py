"""Policy engines (embedded regopy, remote OPA) and the decision model."""
