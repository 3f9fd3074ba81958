"""Workflow definitions: the task graph, its checks and child workflows."""
