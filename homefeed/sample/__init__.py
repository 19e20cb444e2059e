"""Input tables to try the system on: the simulated marketplace, MovieLens import, their CLI."""
