"""UniBazzar incident-time health checks.

Nothing is imported here on purpose: a checks run imports only the probes its
selected checks need (see probes/).
"""

__version__ = "0.1.0"
