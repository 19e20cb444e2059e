"""Offline evaluation: served corpus, target ranks, baselines, metrics, the predictions page."""
