"""The bus: the NATS transport, continuous pulling and the agent registry."""
