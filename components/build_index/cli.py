"""CLI: `candidates build-index` (a thin wrapper over components/build_index/build.py).

Heavy imports (faiss, tensorflow) happen inside the handler.
"""

from __future__ import annotations

import argparse
import os

from homefeed.config import IndexConfig
from homefeed.config_flags import add_config_flags, config_from_args

# build-index flags: generated from IndexConfig (homefeed/config_flags.py), under their established names.
INDEX_FLAGS = {
    "hnsw_ef_construction": "--ef-construction",
    "hnsw_ef_search": "--ef-search",
    "ivf_nprobe": "--nprobe",
    "tune_search": "--tune",
    "recall_sample_size": "--sample-size",
}
INDEX_FLAG_HELP = {
    "index_type": "auto: exact (flat) below --exact-below articles, IVF-Flat from there on; or flat, hnsw, ivf",
    "recall_floor": "refuse an index below this recall@k",
    "recall_sample_size": "users sampled for the recall check",
    "k": "k of the recall check",
    "hnsw_m": "HNSW links per node",
    "hnsw_ef_construction": "HNSW build depth",
    "hnsw_ef_search": "HNSW search depth to start tuning from",
    "ivf_nlist": "IVF lists (none: about 4*sqrt(n))",
    "ivf_nprobe": "IVF lists probed, to start tuning from",
    "exact_below": "auto: exact search below this many articles",
    "max_ef_search": "highest efSearch the tuning may reach",
    "max_nprobe": "highest nprobe the tuning may reach",
    "seed": "random seed (IVF training, the recall sample)",
    "tune_search": "raise --ef-search/--nprobe until the recall floor is met (--no-tune: keep them, refuse if below)",
}


def _index_type(text: str) -> str:
    if text not in ("auto", "flat", "hnsw", "ivf"):
        raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from auto, flat, hnsw, ivf)")
    return text


def register(subparsers) -> None:
    _register_build_index(subparsers)


def _register_build_index(subparsers) -> None:
    p = subparsers.add_parser(
        "build-index",
        help="build the FAISS index of a model directory (MODEL_DIR/index/)",
        description=(
            "Build a FAISS inner-product index over a model's article vectors and write it atomically to "
            "MODEL_DIR/index/ (articles.faiss + index_manifest.json, with the model version and the "
            "vectors' sha256). Approximate indexes are checked: recall@k against exact search on a "
            "sample of real user vectors (user histories encoded by the model) must reach the floor, "
            "raising efSearch/nprobe as needed; otherwise nothing is written and the exit status is 2."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="finished model directory (from `candidates train`)")
    p.add_argument(
        "--histories",
        metavar="PATH",
        help="user_histories.parquet for the recall queries (default: MODEL_DIR/user_histories.parquet; "
        "without any, article vectors are the queries, which overstates recall)",
    )
    p.add_argument("--output", metavar="DIR", help="index directory to write (default: MODEL_DIR/index)")
    add_config_flags(
        p, IndexConfig, "index settings", helps=INDEX_FLAG_HELP, flags=INDEX_FLAGS, types={"index_type": _index_type}
    )
    p.set_defaults(handler=build_index_command)


def build_index_command(args: argparse.Namespace) -> int:
    from components.build_index.build import build_model_index

    config = config_from_args(IndexConfig, args)
    manifest = build_model_index(args.model, config, histories=args.histories, output_dir=args.output)
    k = manifest["k"]
    where = args.output or os.path.join(args.model, "index")
    print(
        f"index written to {where}: {manifest['index_type']} over {manifest['n_articles']} articles, "
        f"recall@{k} {manifest[f'recall@{k}']:.4f} vs exact ({manifest['recall_query_source']}, "
        f"{manifest['recall_queries']} queries), search {manifest['search_params'] or 'exact'}, "
        f"built in {manifest['build_seconds']:.1f}s, model {manifest['model_version']}"
    )
    return 0
