"""Every example agent in one app: ``agenticflow dev`` serves this by default."""

from __future__ import annotations

from agenticflow import AgentApp
from agenticflow.examples.content_pipeline.app import app as content_pipeline
from agenticflow.examples.customer_service.app import app as customer_service
from agenticflow.examples.trading.app import app as trading

app = AgentApp("examples").include(customer_service).include(content_pipeline).include(trading)
"""Serves customer service, content pipeline and trading together."""
