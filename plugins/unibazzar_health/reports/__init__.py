"""What a run shows and writes: the runbook's message templates, the terminal and the files,
Allure, metrics, the exit gate and runbook coverage. Reads the verdict, never posts."""
