"""Listings from a file or a BigQuery table, sent to a running service (`candidates sync-articles`)."""
