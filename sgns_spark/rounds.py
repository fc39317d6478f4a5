"""Driver side of training: epochs x rounds of stratified blocks, and commits.

Each round: the round's sentences become pairs split into blocks (`sgns_spark.strata`);
then for each of the S strata, S tasks each receive one block and the rows it owns, train,
and emit those rows, which the next stratum starts from. No row has two owners, so the
merge is exact. After the last stratum the rows form the next model version, written to
Parquet, and only then does ``_LATEST`` move. The driver holds vocabulary-sized arrays
(keep and noise probabilities), never the model.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sgns_spark.arrow import cogrouped_function, grouped_function, spark_schema
from sgns_spark.config import Config
from sgns_spark.errors import UserError
from sgns_spark.model_store import (
    MODEL_DIRECTORY,
    commit_round,
    initial_model,
    model_from_halves,
    model_halves,
    prune_rounds,
    read_latest,
    read_round,
)
from sgns_spark.shard import (
    BLOCK_SCHEMA,
    PAIRS_SCHEMA,
    STATISTICS_ROW_ID,
    RoundPlan,
    stratified_pairs,
    train_block,
)
from sgns_spark.stages import (
    CORPUS_DIRECTORY,
    VOCAB_DIRECTORY,
    StageReport,
    completed_report,
    report_path,
)
from sgns_spark.storage import Storage
from sgns_spark.strata import noise_scales

SLICE_HASH_SALT = 1  # keeps the round assignment independent of the shard assignment
CHECKPOINT_RELEASE_LOGGER = "org.apache.spark.rdd.MapPartitionsRDD"  # see quiet_checkpoint_release
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


def key_column(keys: list[int], index: Column) -> Column:
    """The partition key (`partition_keys`) of the shard or group number in column `index`."""
    return F.element_at(F.array(*[F.lit(key) for key in keys]), index + 1)


def assign_shards(corpus: DataFrame, config: Config, keys: list[int]) -> DataFrame:
    """Add each sentence's shard, its shard's partition key and its round within an epoch."""
    settings = config.train
    shard = F.pmod(F.xxhash64("sentence_key", F.lit(settings.seed)), F.lit(settings.num_shards))
    round_in_epoch = F.pmod(
        F.xxhash64("sentence_key", F.lit(settings.seed + SLICE_HASH_SALT)),
        F.lit(settings.rounds_per_epoch),
    )
    key_of_shard = key_column(keys, shard.cast("int"))
    return corpus.select(
        shard.cast("int").alias("shard"),
        key_of_shard.alias("shard_key"),
        round_in_epoch.cast("int").alias("round_in_epoch"),
        "sentence_key",
        "ids",
    )


def words_per_round(corpus: DataFrame, rounds: int) -> list[int]:
    """Raw tokens in each round's slice of the corpus (round 0 first)."""
    counted = corpus.groupBy("round_in_epoch").agg(F.sum(F.size("ids")).alias("words")).collect()
    words = dict.fromkeys(range(rounds), 0)
    words.update({row["round_in_epoch"]: int(row["words"]) for row in counted})
    return [words[index] for index in range(rounds)]


def quiet_checkpoint_release(spark: SparkSession) -> None:
    """Silence the warning Spark logs each time `release_checkpoint` drops a local checkpoint.

    It says the lineage cannot be recomputed, which is the point: each phase's rows are
    released only after the next phase's rows are materialised.
    """
    jvm = spark.sparkContext._jvm
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        CHECKPOINT_RELEASE_LOGGER, jvm.org.apache.logging.log4j.Level.ERROR
    )


def release_checkpoint(frame: DataFrame) -> None:
    """Drop the cached blocks behind a `localCheckpoint` now, rather than at the JVM's next GC.

    ``DataFrame.unpersist`` does not reach them: the checkpoint's RDD sits inside the plan.
    A frame that is not a checkpoint is left alone.
    """
    plan = frame._jdf.queryExecution().logical()
    if plan.getClass().getSimpleName() == "LogicalRDD":
        plan.rdd().unpersist(False)


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
        quiet_checkpoint_release(spark)
        vocab = spark.read.parquet(storage.path(VOCAB_DIRECTORY)).orderBy("id")
        columns = vocab.select("count", "keep_prob", "noise_weight").toArrow()
        context = spark.sparkContext
        keep_probability = columns.column("keep_prob").to_numpy()
        noise_weights = columns.column("noise_weight").to_numpy()
        kept_counts = columns.column("count").to_numpy().astype(np.float64) * keep_probability
        self.noise_scale = noise_scales(kept_counts, noise_weights, train.num_shards)
        self.keep_probability = context.broadcast(keep_probability)
        self.noise_weights = context.broadcast(noise_weights)
        self.vocab_size = columns.num_rows
        self.task_keys = partition_keys(spark, train.num_shards)
        corpus = spark.read.parquet(storage.path(CORPUS_DIRECTORY))
        self.corpus = assign_shards(corpus, config, self.task_keys)
        self.corpus = self.corpus.persist(StorageLevel.MEMORY_AND_DISK)
        self.words_per_round = words_per_round(self.corpus, train.rounds_per_epoch)
        self.words_per_epoch = sum(self.words_per_round)

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
        words_before = epoch * self.words_per_epoch + sum(self.words_per_round[:round_index])
        return RoundPlan(
            settings=train, epoch=epoch, round_index=round_index, cycle=0, stratum=0,
            keep_probability=self.keep_probability, noise_weights=self.noise_weights,
            noise_scale=self.noise_scale, task_keys=tuple(self.task_keys), words_before=words_before,
            words_in_round=self.words_per_round[round_index], words_total=self.words_per_epoch * train.epochs,
        )

    def train_round(self, global_round: int) -> dict:
        """Run every stratum of one round, check each, and commit the round; return its statistics."""
        train = self.config.train
        groups = train.num_shards
        plan = self.plan(global_round)
        description = (f"sgns-spark train epoch {plan.epoch + 1}/{train.epochs} "
                       f"round {plan.round_index + 1}/{train.rounds_per_epoch}")
        self.spark.sparkContext.setJobDescription(f"{description} pairs")
        started = time.perf_counter()
        sentences = self.corpus.where(F.col("round_in_epoch") == plan.round_index).select(
            "shard_key", "shard", "sentence_key", "ids"
        )
        blocks = sentences.groupBy("shard_key").applyInArrow(
            grouped_function(stratified_pairs, plan=plan), spark_schema(PAIRS_SCHEMA)
        ).localCheckpoint(eager=True)
        halves = model_halves(read_round(self.spark, self.storage, global_round - 1), groups, train.dim)
        totals = {"loss": 0.0, "pairs": 0, "worker_peak_rss_mib": 0.0, "worker_python": ""}
        for cycle, stratum in itertools.product(range(train.cycles_per_round), range(groups)):
            phase = f"cycle {cycle + 1}/{train.cycles_per_round} stratum {stratum + 1}/{groups}"
            self.spark.sparkContext.setJobDescription(f"{description} {phase}")
            owner = F.pmod(F.col("group") - F.col("side") * F.lit(stratum), F.lit(groups))
            rows = halves.where(F.col("id") != STATISTICS_ROW_ID).select(
                key_column(self.task_keys, owner).alias("task_key"), "id", "group", "side", "vector"
            )
            block = blocks.where((F.col("cycle") == cycle) & (F.col("stratum") == stratum))
            trained = block.groupBy("task_key").cogroup(rows.groupBy("task_key")).applyInArrow(
                cogrouped_function(train_block, plan=dataclasses.replace(plan, cycle=cycle, stratum=stratum)),
                spark_schema(BLOCK_SCHEMA),
            ).localCheckpoint(eager=True)
            statistics = trained.where(F.col("id") == STATISTICS_ROW_ID).agg(
                F.sum("loss").alias("loss"), F.sum("pairs").alias("pairs"),
                F.max("worker_peak_rss_mib").alias("worker_peak_rss_mib"),
                F.max("worker_python").alias("worker_python"),
            ).first().asDict()
            if not math.isfinite(statistics["loss"] or 0.0):
                raise UserError(
                    f"training diverged in {description} {phase}: the loss is not finite; lower "
                    f"train.learning_rate (now {train.learning_rate}); model round "
                    f"{global_round - 1} stays the latest"
                )
            release_checkpoint(halves)
            halves = trained
            totals["loss"] += statistics["loss"] or 0.0
            totals["pairs"] += statistics["pairs"] or 0
            totals["worker_peak_rss_mib"] = max(totals["worker_peak_rss_mib"], statistics["worker_peak_rss_mib"])
            totals["worker_python"] = statistics["worker_python"]
        trained_at = time.perf_counter()
        self.commit(model_from_halves(halves, train.dim), global_round)
        release_checkpoint(halves)
        release_checkpoint(blocks)
        committed = time.perf_counter()
        seconds = committed - started
        words = self.words_per_round[plan.round_index]
        print(
            f"[train] epoch {plan.epoch + 1}/{train.epochs} round {plan.round_index + 1}/"
            f"{train.rounds_per_epoch}: {words:,} words in {seconds:.1f} s "
            f"(pairs and {train.cycles_per_round} x {groups} strata {trained_at - started:.1f} s, "
            f"commit {committed - trained_at:.1f} s; "
            f"{words / seconds:,.0f} words/s), loss {totals['loss'] / max(totals['pairs'], 1):.4f}, "
            f"lr {plan.learning_rate(0.0):.5f}",
            flush=True,
        )
        return {**totals, "words": words}

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

