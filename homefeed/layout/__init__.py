"""One module per artifact directory: its file names and the one check that it is finished.

    extract_dir.py    EXTRACT_DIR    (components/extract writes; transform, evaluate, serving read)
    transform_dir.py  TRANSFORM_DIR  (components/transform writes; trainer/training/data.py reads)
    model_dir.py      MODEL_DIR      (trainer/training/export.py writes; evaluate, build-index, publish, serve read)
    index_dir.py      MODEL_DIR/index/ (components/build_index/build.py writes; publish and serve read)
    publish_root.py   PUBLISH_ROOT   (components/publish/publish.py writes; the service follows LATEST)

Every writer and reader imports its names from here; directories are made with
`homefeed.atomic.staged_dir` (staged, fsynced, renamed into place). Standard library only.
"""
