"""Metric providers: where a check's value comes from, one module per source."""
