"""spark-submit entry point: train SGNS from the newest model round to the last epoch."""

from sgns_spark.cli import job_arguments, run_job
from sgns_spark.summary import print_train_summary
from sgns_spark.train.driver import run_train_stage


def main() -> None:
    arguments = job_arguments(__doc__).parse_args()
    run_job("train", arguments, lambda job: print_train_summary(run_train_stage(job.spark, job.config, job.storage)))


if __name__ == "__main__":
    main()
