"""Security: keys and seals, process identities, credentials, RBAC and the audit trail."""
