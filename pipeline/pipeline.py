"""The candidate-generation pipeline: extract -> transform -> train -> evaluate, then the final fit
-> build index -> publish.

The held-out run (transform analysed over the train split, train with validation) gives the test
figures (evaluate). The model that is published is then trained again on every view up to as_of
with vocabularies built from all of them (transform with analyze_splits="all", train_final with the
held-out run's epoch count and id dropout), so the listings first viewed in the validation and test
windows are not left on the shared OOV rows; its figures are the held-out model's, and the publish
record says so.

This module only wires tasks. Each component (components/<stage>/component.py) is a thin wrapper
over a library function; roots, runners and clusters are chosen by compile.py, submit.py and
run_local.py. Defaults come from the typed configs in homefeed/config.py, so the CLI, the
pipeline and the library agree on them.

KFP parameters cannot be None: an empty string or 0 means "not set" where the config has None
(`as_of`, `max_article_age_days`, `lookback_days`, `vocab_top_k`).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Metrics, Model

from components.build_index.component import build_index
from components.evaluate.component import evaluate
from components.extract.component import extract
from components.image import DEFAULT_IMAGE
from components.publish.component import publish
from components.train.component import train, train_final
from components.transform.component import transform
from homefeed.config import (
    EvaluateConfig,
    ExtractConfig,
    IndexConfig,
    PublishConfig,
    TrainConfig,
    TransformConfig,
)

PIPELINE_NAME = "homefeed-candidates"

_EXTRACT = ExtractConfig()
_TRANSFORM = TransformConfig()
_TRAIN = TrainConfig()
_EVALUATE = EvaluateConfig()
_INDEX = IndexConfig()
_PUBLISH = PublishConfig()


class PipelineOutputs(NamedTuple):
    published: bool
    version: str
    reason: str
    # The held-out model's, on the test split.
    recall_at_200: float
    # The model published (trained on every view up to as_of) and the held-out one evaluated.
    model: Model
    held_out_model: Model
    index: Artifact
    evaluation: Artifact
    metrics: Metrics


@dsl.pipeline(
    name=PIPELINE_NAME,
    description=(
        "Candidate generation for a home feed: BigQuery SQL -> TF Transform on Beam -> two-tower "
        "model held out -> recall@K evaluation; the same model trained on every view up to as_of -> "
        "FAISS index -> gated publish (LATEST moves only if the held-out recall@200 clears the floor "
        "and does not regress)."
    ),
)
def candidates_pipeline(
    # The container image of every task (the repository's Dockerfile).
    image: str = DEFAULT_IMAGE,
    # Extract: where the input tables are and how to window them.
    bq_project: str = _EXTRACT.project,
    bq_dataset: str = _EXTRACT.dataset,
    events_table: str = _EXTRACT.events_table,
    articles_table: str = _EXTRACT.articles_table,
    bq_location: str = "",
    bq_endpoint: str = "",
    local_events: str = "",
    local_articles: str = "",
    # Optional searches table (user_id, query, searched_at): a BigQuery table name, or a local file.
    searches_table: str = "",
    local_searches: str = "",
    search_length: int = _EXTRACT.search_length,
    as_of: str = "",
    history_length: int = _EXTRACT.history_length,
    max_article_age_days: int = 0,
    lookback_days: int = 0,
    # Split: "time" (train / validation / test by a global time cut, windows of test_days and
    # validation_days before as_of), "per-user" (each user's last view test), "" the dataset's choice.
    split: str = "",
    test_days: float = _EXTRACT.test_days,
    validation_days: float = _EXTRACT.validation_days,
    # Transform: the Beam runner and its options (e.g. ["--project=p", "--region=r", "--temp_location=gs://b/t"]).
    beam_runner: str = _TRANSFORM.runner,
    beam_direct_num_workers: int = _TRANSFORM.direct_num_workers,
    beam_args: list[str] = [],  # noqa: B006 - a KFP default value, never mutated
    vocab_frequency_threshold: int = _TRANSFORM.vocab_frequency_threshold,
    vocab_top_k: int = 0,
    # Train: model hyper-parameters.
    embedding_dim: int = _TRAIN.embedding_dim,
    output_dim: int = _TRAIN.output_dim,
    learning_rate: float = _TRAIN.learning_rate,
    batch_size: int = _TRAIN.batch_size,
    epochs: int = _TRAIN.epochs,
    temperature: float = _TRAIN.temperature,
    early_stopping_patience: int = _TRAIN.early_stopping_patience,
    seed: int = _TRAIN.seed,
    # Any other TrainConfig field, by name, e.g. {"tower_units": [256, 128], "dropout": 0.1}.
    train_overrides: dict = {},  # noqa: B006 - a KFP default value, never mutated
    # Data-parallel training processes on the train task's machine (batch_size must split evenly over them).
    train_workers: int = 1,
    # Evaluate: "examples" replays each test view at its own age; "serving" asks as the service does (age 0).
    eval_example_age: str = _EVALUATE.example_age,
    # Index.
    index_type: str = _INDEX.index_type,
    index_recall_floor: float = _INDEX.recall_floor,
    # Publish: the gate and where the service reads models from.
    min_recall_at_200: float = _PUBLISH.min_recall_at_200,
    max_regression: float = _PUBLISH.max_regression,
    publish_root: str = "",
) -> PipelineOutputs:
    extract_task = (
        extract(
            project=bq_project,
            dataset=bq_dataset,
            events_table=events_table,
            articles_table=articles_table,
            location=bq_location,
            as_of=as_of,
            history_length=history_length,
            max_article_age_days=max_article_age_days,
            lookback_days=lookback_days,
            bigquery_endpoint=bq_endpoint,
            local_events=local_events,
            local_articles=local_articles,
            searches_table=searches_table,
            local_searches=local_searches,
            search_length=search_length,
            split=split,
            test_days=test_days,
            validation_days=validation_days,
        )
        .set_display_name("extract (BigQuery SQL)")
        .set_container_image(image)
        # The tables change between runs with the same parameters: never reuse an old extract.
        .set_caching_options(False)
    )
    examples = extract_task.outputs["examples"]

    # The held-out transform and the one over every split differ only in what they analyse.
    transform_args = dict(
        examples=examples,
        history_length=history_length,
        vocab_frequency_threshold=vocab_frequency_threshold,
        vocab_top_k=vocab_top_k,
        runner=beam_runner,
        direct_num_workers=beam_direct_num_workers,
        beam_args=beam_args,
    )
    transform_task = transform(**transform_args).set_display_name("transform (Beam + TFT)").set_container_image(image)

    train_task = (
        train(
            transformed=transform_task.outputs["transformed"],
            embedding_dim=embedding_dim,
            output_dim=output_dim,
            learning_rate=learning_rate,
            batch_size=batch_size,
            epochs=epochs,
            temperature=temperature,
            early_stopping_patience=early_stopping_patience,
            seed=seed,
            overrides=train_overrides,
            workers=train_workers,
        )
        .set_display_name("train (two-tower, held out)")
        .set_container_image(image)
    )
    held_out_model = train_task.outputs["model"]

    evaluate_task = (
        evaluate(model=held_out_model, examples=examples, example_age=eval_example_age, publish_root=publish_root)
        .set_display_name("evaluate (recall@K, held out)")
        .set_container_image(image)
    )

    # The model to publish: every view up to as_of, vocabularies from all of them.
    transform_all_task = (
        transform(**transform_args, analyze_splits="all")
        .set_display_name("transform (all splits)")
        .set_container_image(image)
    )
    final_task = (
        train_final(
            transformed=transform_all_task.outputs["transformed"],
            held_out=held_out_model,
            workers=train_workers,
        )
        .set_display_name("train (every view up to as_of)")
        .set_container_image(image)
    )
    model = final_task.outputs["model"]
    index_task = (
        build_index(model=model, examples=examples, index_type=index_type, recall_floor=index_recall_floor)
        .set_display_name("build index (FAISS)")
        .set_container_image(image)
    )

    publish_task = (
        publish(
            model=model,
            evaluation=evaluate_task.outputs["evaluation"],
            index=index_task.outputs["index"],
            examples=examples,
            publish_root=publish_root,
            min_recall_at_200=min_recall_at_200,
            max_regression=max_regression,
        )
        .set_display_name("publish (gated)")
        .set_container_image(image)
        # Its outcome depends on what is published right now, not only on its inputs.
        .set_caching_options(False)
    )

    return PipelineOutputs(
        published=publish_task.outputs["published"],
        version=publish_task.outputs["version"],
        reason=publish_task.outputs["reason"],
        recall_at_200=evaluate_task.outputs["recall_at_200"],
        model=model,
        held_out_model=held_out_model,
        index=index_task.outputs["index"],
        evaluation=evaluate_task.outputs["evaluation"],
        metrics=evaluate_task.outputs["metrics"],
    )
