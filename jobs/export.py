"""spark-submit entry point: score the newest model round and publish it as a new version."""

from sgns_spark.cli import job_arguments, run_job
from sgns_spark.export import run_export_stage
from sgns_spark.summary import print_export_summary


def main() -> None:
    arguments = job_arguments(__doc__).parse_args()
    run_job("export", arguments, lambda job: print_export_summary(run_export_stage(job.spark, job.config, job.storage)))


if __name__ == "__main__":
    main()
