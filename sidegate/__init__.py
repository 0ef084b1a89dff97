"""The sidegate process: config, gRPC server, admin endpoints, logging and lifecycle."""

__version__ = "0.1.0"
