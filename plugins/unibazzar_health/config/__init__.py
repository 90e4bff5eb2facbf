"""Configuration: the platform's names, the environment file and its secrets, and the
redaction of what must never be shown. The lowest layer: it imports nothing of ours."""
