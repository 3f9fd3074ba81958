"""Operations: settings, logging, metrics, tracing, health and service loops."""
