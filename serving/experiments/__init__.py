"""Online experiments: arms served to stable user buckets, exposures logged, the lift reported."""
