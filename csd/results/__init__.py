"""Results: the metrics, the results table and the report's figures."""
