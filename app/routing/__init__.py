"""Routing: pure code (no I/O) from a request to an ordered plan of deployments."""
