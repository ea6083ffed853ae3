"""Pieces every platform connector shares: polling windows, backwards paging, the factory
shape, per-loop HTTP clients, durable tokens, error bases and GMT+8 times.

Only logic that is the same on every platform that uses it lives here; what a platform does
differently stays in its own package. Nothing here may know a platform's wire format or
error codes.
"""
