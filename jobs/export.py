"""spark-submit entry point: score the newest model round and publish it as a new version."""

from sgns_spark.cli import job_arguments, run_job
from sgns_spark.export import published_vectors, run_export_stage
from sgns_spark.model_store import read_latest
from sgns_spark.scoring import evaluation_vectors, score
from sgns_spark.summary import print_export_summary, print_scores


def main() -> None:
    arguments = job_arguments(__doc__).parse_args()

    def body(spark, config, storage):
        latest = read_latest(storage)
        scores = {}
        if latest is not None:
            vectors = published_vectors(spark, storage, latest["round"], config.export.normalize)
            scores = score(evaluation_vectors(vectors, config.evaluate), config.evaluate)
            print_scores(scores)
        print_export_summary(run_export_stage(spark, config, storage, scores))

    run_job("export", arguments, body)


if __name__ == "__main__":
    main()
