"""Customer-service escalation: triage, technical resolution, manager escalation."""
