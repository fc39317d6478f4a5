"""spark-submit entry point: tokenize and count a corpus; write vocabulary and encoded corpus."""

from sgns_spark.cli import job_arguments, run_job
from sgns_spark.stages import run_vocab_stage
from sgns_spark.summary import print_vocab_summary


def main() -> None:
    arguments = job_arguments(__doc__, needs_input=True).parse_args()

    def body(spark, config, storage):
        print_vocab_summary(run_vocab_stage(spark, config, arguments.input, storage))

    run_job("vocab", arguments, body)


if __name__ == "__main__":
    main()
