"""Replaying held-out traffic through the HTTP service: does the offline evaluation predict what it serves?"""
