"""Counting algorithms, apart from storage: pure functions over a bucket's stored state.

The in-memory backend runs these; ``buckets/lua/take.lua`` is the same arithmetic inside Redis.
"""
