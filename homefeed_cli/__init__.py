"""The top of the stack: the `candidates` command line and the local demo.

    cli.py    the `candidates` entry point (`python -m homefeed_cli`); collects each stage's
              `register(subparsers)` (homefeed/sample/cli.py, components/*/cli.py, trainer/cli.py,
              serving/cli.py, serving/live/cli.py, pipeline/cli.py)
    demo.py   `make demo`: the whole pipeline on sample data, then serve and query it

Nothing below imports this package; errors the stage CLIs raise live in `homefeed.errors`.
"""
