"""Kubeflow component: train (see component.py)."""
