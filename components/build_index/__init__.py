"""Kubeflow component: build_index (see component.py)."""
