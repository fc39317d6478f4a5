"""spark-submit entry point: the whole pipeline (vocab, train, evaluate, export) in one session."""

from sgns_spark.cli import job_arguments, run_job
from sgns_spark.export import published_vectors, run_export_stage
from sgns_spark.model_store import read_latest
from sgns_spark.rounds import run_train_stage
from sgns_spark.scoring import evaluation_vectors, score
from sgns_spark.stages import run_vocab_stage
from sgns_spark.summary import (
    print_export_summary,
    print_scores,
    print_train_summary,
    print_vocab_summary,
)


def main() -> None:
    arguments = job_arguments(__doc__, needs_input=True).parse_args()

    def body(spark, config, storage):
        print_vocab_summary(run_vocab_stage(spark, config, arguments.input, storage))
        print_train_summary(run_train_stage(spark, config, storage))
        model_round = read_latest(storage)["round"]
        vectors = published_vectors(spark, storage, model_round, config.export.normalize)
        scores = score(evaluation_vectors(vectors, config.evaluate), config.evaluate)
        print_scores(scores)
        print_export_summary(run_export_stage(spark, config, storage, scores))

    run_job("pipeline", arguments, body)


if __name__ == "__main__":
    main()
