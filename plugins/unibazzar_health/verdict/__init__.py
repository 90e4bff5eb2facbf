"""From results to a verdict: the catalog (the runbook as data), the severity policy, the
runbook's policy on time and people, each check's result and the incident summary."""
