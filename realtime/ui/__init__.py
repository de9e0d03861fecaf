"""UI: the live dashboard (rich renderables)."""
