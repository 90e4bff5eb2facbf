"""A stand-in of UniBazzar on loopback, made of real servers (see docs/sandbox.md).

It knows nothing of the health checks: it is the platform they examine.
"""
