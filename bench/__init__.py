"""Benchmarks: sidegate against always-allow null services, through a real Envoy and over gRPC."""
