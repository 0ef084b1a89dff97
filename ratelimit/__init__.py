"""The ShouldRateLimit service: envoyproxy/ratelimit-compatible rules, tiers, token buckets."""
