"""Driver side of training: epochs x rounds of sharded local SGD, averaging and commits.

Each round: every shard names the rows it needs, receives exactly those rows through a
join, trains, and emits its touched rows; the rows are averaged into the next model
version, written to Parquet, and only then does ``_LATEST`` move. The driver holds
vocabulary-sized arrays (keep and noise probabilities), never the model.
"""

from __future__ import annotations

import math
import time

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sgns_spark.arrow import cogrouped_function, grouped_function, spark_schema
from sgns_spark.config import Config
from sgns_spark.errors import UserError
from sgns_spark.model_store import (
    MODEL_DIRECTORY,
    average_into,
    commit_round,
    initial_model,
    prune_rounds,
    read_latest,
    read_round,
)
from sgns_spark.shard import (
    NEEDED_SCHEMA,
    STATISTICS_ROW_ID,
    UPDATE_SCHEMA,
    RoundPlan,
    needed_rows,
    train_shard,
)
from sgns_spark.stages import (
    CORPUS_DIRECTORY,
    VOCAB_DIRECTORY,
    StageReport,
    completed_report,
    report_path,
)
from sgns_spark.storage import Storage

SLICE_HASH_SALT = 1  # keeps the round assignment independent of the shard assignment
KEY_SEARCH_FACTOR = 64  # candidate keys tried per shard when pairing shards with partitions


def partition_keys(spark: SparkSession, partitions: int) -> list[int]:
    """For each shard s, an int key that Spark's hash partitioner sends to partition s.

    Grouping by these keys with ``partitions`` shuffle partitions gives every shard a task
    of its own; grouping by the shard numbers themselves could put two shards in one task.
    """
    candidates = spark.range(partitions * KEY_SEARCH_FACTOR).select(
        F.col("id").cast("int").alias("key"),
        F.pmod(F.hash(F.col("id").cast("int")), F.lit(partitions)).alias("partition"),
    ).groupBy("partition").agg(F.min("key").alias("key")).collect()
    keys = {row["partition"]: row["key"] for row in candidates}
    if len(keys) < partitions:
        raise RuntimeError(f"found keys for only {len(keys)} of {partitions} partitions")
    return [keys[partition] for partition in range(partitions)]


def assign_shards(corpus: DataFrame, config: Config, keys: list[int]) -> DataFrame:
    """Add each sentence's shard, its shard's partition key and its round within an epoch."""
    settings = config.train
    shard = F.pmod(F.xxhash64("sentence_key", F.lit(settings.seed)), F.lit(settings.num_shards))
    round_in_epoch = F.pmod(
        F.xxhash64("sentence_key", F.lit(settings.seed + SLICE_HASH_SALT)),
        F.lit(settings.rounds_per_epoch),
    )
    key_of_shard = F.element_at(F.array(*[F.lit(key) for key in keys]), shard.cast("int") + 1)
    return corpus.select(
        shard.cast("int").alias("shard"),
        key_of_shard.alias("shard_key"),
        round_in_epoch.cast("int").alias("round_in_epoch"),
        "sentence_key",
        "ids",
    )


def run_train_stage(spark: SparkSession, config: Config, storage: Storage) -> dict:
    """Train from the newest committed round (or round 0) to the last round of the last epoch.

    Returns
    -------
    dict
        The stage's run report.
    """
    if not storage.exists(report_path("vocab")):
        raise UserError(f"run root {storage.root} has no vocabulary; run the vocab stage first")
    vocab_report = storage.read_json(report_path("vocab"))
    settings = {**config.prefixed("train", leave_out=("restart",)), "vocab": vocab_report["settings"]}
    if config.train.restart:
        storage.delete(MODEL_DIRECTORY)
        storage.delete(report_path("train"))
    done = completed_report(storage, "train", settings)
    if done is not None:
        print(f"[train] already done in {storage.root}; skipping", flush=True)
        return done
    storage.clear_staging()
    report = StageReport("train", settings)
    trainer = Trainer(spark, config, storage, vocab_report, settings)
    trainer.run(report)
    document = report.document()
    storage.write_json(report_path("train"), document)
    return document


class Trainer:
    """The driver's state across rounds: broadcasts, the sharded corpus, the schedule."""

    def __init__(self, spark: SparkSession, config: Config, storage: Storage,
                 vocab_report: dict, settings: dict):
        self.spark, self.config, self.storage, self.settings = spark, config, storage, settings
        train = config.train
        spark.conf.set("spark.sql.shuffle.partitions", str(train.num_shards))
        vocab = spark.read.parquet(storage.path(VOCAB_DIRECTORY)).orderBy("id")
        columns = vocab.select("count", "keep_prob", "noise_weight").toArrow()
        context = spark.sparkContext
        self.counts = context.broadcast(columns.column("count").to_numpy().astype(np.float64))
        self.keep_probability = context.broadcast(columns.column("keep_prob").to_numpy())
        self.noise_weights = context.broadcast(columns.column("noise_weight").to_numpy())
        self.vocab_size = columns.num_rows
        self.words_per_epoch = float(vocab_report["counts"]["retained_tokens"])
        corpus = spark.read.parquet(storage.path(CORPUS_DIRECTORY))
        self.corpus = assign_shards(corpus, config, partition_keys(spark, train.num_shards))
        self.corpus = self.corpus.persist(StorageLevel.MEMORY_AND_DISK)

    def run(self, report: StageReport) -> None:
        """Train every round not yet committed, printing one line per round."""
        train = self.config.train
        latest = read_latest(self.storage)
        if latest is not None and latest["settings"] != self.settings:
            raise UserError(
                f"run root {self.storage.root} holds model rounds trained with other settings; "
                "set train.restart=true to start over, or use a new output root"
            )
        if latest is None:
            self.commit(initial_model(self.spark, self.vocab_size, train.dim, train.seed,
                                      train.num_shards), 0)
            latest = read_latest(self.storage)
        total_rounds = train.epochs * train.rounds_per_epoch
        resumed_from = latest["round"]
        totals = {"words": 0, "pairs": 0, "loss": 0.0}
        worker_peak_rss, worker_python = 0.0, ""
        started = time.perf_counter()
        for global_round in range(resumed_from + 1, total_rounds + 1):
            statistics = self.train_round(global_round)
            for key in totals:
                totals[key] += statistics[key]
            worker_peak_rss = max(worker_peak_rss, statistics["worker_peak_rss_mib"])
            worker_python = statistics["worker_python"]
        elapsed = time.perf_counter() - started
        self.corpus.unpersist()
        report.counts = {
            "vocab_size": self.vocab_size, "rounds": total_rounds, "resumed_from_round": resumed_from,
            "trained_words": totals["words"], "pairs": totals["pairs"],
            "mean_loss": totals["loss"] / max(totals["pairs"], 1),
            "words_per_second": totals["words"] / elapsed if elapsed else 0.0,
            "worker_peak_rss_mib": round(worker_peak_rss, 1),
            "worker_python": worker_python,
        }
        report.step("train")

    def plan(self, global_round: int) -> RoundPlan:
        """The schedule position of a round (rounds are numbered from 1; 0 is the init)."""
        train = self.config.train
        epoch, round_index = divmod(global_round - 1, train.rounds_per_epoch)
        words_in_round = self.words_per_epoch / train.rounds_per_epoch
        return RoundPlan(
            settings=train, epoch=epoch, round_index=round_index, counts=self.counts,
            keep_probability=self.keep_probability, noise_weights=self.noise_weights,
            words_before=(global_round - 1) * words_in_round, words_in_round=words_in_round,
            words_total=self.words_per_epoch * train.epochs,
        )

    def train_round(self, global_round: int) -> dict:
        """Run, check and commit one round; return its statistics."""
        train = self.config.train
        plan = self.plan(global_round)
        description = (f"sgns-spark train epoch {plan.epoch + 1}/{train.epochs} "
                       f"round {plan.round_index + 1}/{train.rounds_per_epoch}")
        self.spark.sparkContext.setJobDescription(description)
        started = time.perf_counter()
        sentences = self.corpus.where(F.col("round_in_epoch") == plan.round_index).select(
            "shard_key", "shard", "sentence_key", "ids"
        )
        model = read_round(self.spark, self.storage, global_round - 1)
        needs = sentences.groupBy("shard_key").applyInArrow(
            grouped_function(needed_rows, plan=plan), spark_schema(NEEDED_SCHEMA)
        )
        rows = needs.join(model, "id")
        updates = sentences.groupBy("shard_key").cogroup(rows.groupBy("shard_key")).applyInArrow(
            cogrouped_function(train_shard, plan=plan), spark_schema(UPDATE_SCHEMA)
        ).localCheckpoint(eager=True)
        statistics = updates.where(F.col("id") == STATISTICS_ROW_ID).agg(
            F.sum("loss").alias("loss"), F.sum("pairs").alias("pairs"), F.sum("words").alias("words"),
            F.max("worker_peak_rss_mib").alias("worker_peak_rss_mib"),
            F.max("worker_python").alias("worker_python"),
        ).first().asDict()
        statistics = {key: value or 0 for key, value in statistics.items()}
        if not math.isfinite(statistics["loss"]):
            raise UserError(
                f"training diverged in {description}: the loss is not finite; lower "
                f"train.learning_rate (now {train.learning_rate}); model round "
                f"{global_round - 1} stays the latest"
            )
        trained = time.perf_counter()
        self.commit(average_into(model, updates, train.dim, self.vocab_size, train.num_shards), global_round)
        updates.unpersist()
        committed = time.perf_counter()
        seconds = committed - started
        print(
            f"[train] epoch {plan.epoch + 1}/{train.epochs} round {plan.round_index + 1}/"
            f"{train.rounds_per_epoch}: {statistics['words']:,} words in {seconds:.1f} s "
            f"(shards {trained - started:.1f} s, average and commit {committed - trained:.1f} s; "
            f"{statistics['words'] / seconds:,.0f} words/s), loss "
            f"{statistics['loss'] / max(statistics['pairs'], 1):.4f}, "
            f"lr {plan.learning_rate(0.0):.5f}",
            flush=True,
        )
        return statistics

    def commit(self, model: DataFrame, global_round: int) -> None:
        """Write a complete round to staging, move it into place, move ``_LATEST``, prune."""
        staged = self.storage.staging_path(f"round-{global_round:06d}")
        model.write.parquet(self.storage.path(staged))
        epoch, round_index = divmod(max(global_round - 1, 0), self.config.train.rounds_per_epoch)
        commit_round(self.storage, staged, {
            "round": global_round, "epoch": epoch, "round_in_epoch": round_index,
            "settings": self.settings,
        })
        prune_rounds(self.storage, self.config.train.keep_rounds)

