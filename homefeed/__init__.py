"""homefeed-candidates: shared feature spec, configuration, CLI and sample data."""

__version__ = "0.1.0"
