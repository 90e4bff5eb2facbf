"""The checks run: load the UniBazzar health plugin (options, markers, verdict)."""

pytest_plugins = ["unibazzar_health.plugin"]
