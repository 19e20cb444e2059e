"""Kubeflow component: publish (see component.py)."""
