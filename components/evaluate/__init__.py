"""Kubeflow component: evaluate (see component.py)."""
