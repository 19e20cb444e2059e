"""The request path without HTTP: history -> user vector -> top-k -> filters, in batches."""
