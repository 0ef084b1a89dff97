"""Primitives shared by the process and both services: one of each per concern.

``sidegate.extauthz`` and ``sidegate.ratelimit`` never import ``sidegate``'s process modules or
each other; what both need (the bounded cache, the file watcher, the YAML loader, ...) lives here
and imports nothing from the other packages.
"""
