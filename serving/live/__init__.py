"""The live feed between pipeline runs: posted views and searches, listing upserts, the sync loop."""
