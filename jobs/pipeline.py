"""spark-submit entry point: the whole pipeline (vocab, train, evaluate, export) in one session."""

from sgns_spark.cli import job_arguments, run_job
from sgns_spark.export import run_export_stage
from sgns_spark.stages import run_vocab_stage
from sgns_spark.summary import print_export_summary, print_train_summary, print_vocab_summary
from sgns_spark.train.driver import run_train_stage


def main() -> None:
    arguments = job_arguments(__doc__, needs_input=True).parse_args()

    def body(job):
        job.progress.begin("vocab")
        print_vocab_summary(run_vocab_stage(job.spark, job.config, job.corpus, job.storage))
        job.progress.begin("train")
        print_train_summary(run_train_stage(job.spark, job.config, job.storage))
        job.progress.begin("export")
        print_export_summary(run_export_stage(job.spark, job.config, job.storage))

    run_job("pipeline", arguments, body)


if __name__ == "__main__":
    main()
