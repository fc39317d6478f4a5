"""spark-submit entry point: tokenize and count a corpus; write vocabulary and encoded corpus."""

from sgns_spark.cli import job_arguments, run_job
from sgns_spark.stages import run_vocab_stage
from sgns_spark.summary import print_vocab_summary


def main() -> None:
    arguments = job_arguments(__doc__, needs_input=True).parse_args()
    run_job("vocab", arguments,
            lambda job: print_vocab_summary(run_vocab_stage(job.spark, job.config, job.corpus, job.storage)))


if __name__ == "__main__":
    main()
