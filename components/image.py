"""The container image every Kubeflow component runs in (the Dockerfile at the repository root).

Components are decorated with this default; the pipeline's `image` parameter overrides it per
run (`task.set_container_image`), so a cluster can run a pushed image such as
`europe-docker.pkg.dev/<project>/<repo>/homefeed-candidates:<tag>` without recompiling.
`kfp.local` ignores the image and runs each component in this Python environment.
"""

from homefeed import __version__

DEFAULT_IMAGE = f"homefeed-candidates:{__version__}"
