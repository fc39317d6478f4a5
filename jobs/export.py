"""spark-submit entry point: score the newest model round and publish it as a new version."""

from sgns_spark.cli import job_arguments, run_job
from sgns_spark.export import score_and_publish
from sgns_spark.summary import print_export_summary, print_scores


def main() -> None:
    arguments = job_arguments(__doc__).parse_args()

    def body(spark, config, storage):
        scores, report = score_and_publish(spark, config, storage)
        print_scores(scores)
        print_export_summary(report)

    run_job("export", arguments, body)


if __name__ == "__main__":
    main()
