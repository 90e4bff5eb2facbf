"""What checks use beside the probes: the runbook marker and the check's context, the
measurements checks share, the concurrent observer, and the helpers that read logs, pods,
rate limits and indexes for the checks. Imports probes and config, never upward."""
