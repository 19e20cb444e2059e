"""A published model version as the service holds it: files, integrity, arrays, the swap."""
