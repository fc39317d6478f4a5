"""spark-submit entry point: train SGNS from the newest model round to the last epoch."""

from sgns_spark.cli import job_arguments, run_job
from sgns_spark.rounds import run_train_stage


def main() -> None:
    arguments = job_arguments(__doc__).parse_args()
    run_job("train", arguments, lambda spark, config, storage: run_train_stage(spark, config, storage))


if __name__ == "__main__":
    main()
