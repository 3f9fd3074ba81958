"""Wire contract and cross-cutting code shared by coordinator, workers and clients.

Imports nothing of ours: ``coordinator`` and ``worker`` build on it and meet
only on the bus.
"""
