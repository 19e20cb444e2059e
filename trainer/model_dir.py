"""The MODEL_DIR layout, under the name the trainer's modules import it by.

The owner is `homefeed.layout.model_dir` (base layer: the service, the publish step and the
index builder read the same names and the same validator); this module only re-exports it.
"""

from homefeed.layout.model_dir import *  # noqa: F401,F403
