"""The HTTP edge of the candidate service: app, routes, auth, request guards, settings."""
