"""Driver side of training: the schedule's rounds as Spark jobs, one job per committed version.

A job loads the newest committed round (or the initialisation), reads its rounds' sentences in
one scan of the corpus (kept for the job), then for each of its rounds lists the round's pairs
(one stage, persisted) and runs the round's phases, one stage each:
every task trains its block and sends each row to the task that owns it next. Rows move only
through Spark's shuffle, so a lost executor's share is recomputed from lineage, back to the
job's start at worst, and seeded draws make the recomputed rows identical. The job's action
writes the last phase's rows as the next model version; ``_LATEST`` moves only after it is
complete. The driver holds vocabulary-sized arrays (keep and noise probabilities), never rows.
"""

from __future__ import annotations

import functools
import math
import operator
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark import RDD, AccumulatorParam, TaskContext
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from sgns_spark.arrow import collect_by_id, list_lengths, spark_schema
from sgns_spark.config import Config
from sgns_spark.errors import UserError
from sgns_spark.layout import CORPUS_DIRECTORY, MODEL_DIRECTORY, VOCAB_DIRECTORY, report_path
from sgns_spark.progress import elapsed_text
from sgns_spark.session import broadcast
from sgns_spark.spark_metrics import job_group_metrics, warm_up
from sgns_spark.stages import StageReport, completed_report
from sgns_spark.storage import Storage
from sgns_spark.train.model_store import (
    commit_round,
    committed_rows,
    initial_rows,
    persisted,
    read_latest,
    round_settings,
    shuffle_rows,
    task_partition,
    write_rows,
)
from sgns_spark.train.schedule import Round, noise_scales, rounds
from sgns_spark.train.task import (
    SOURCE_SHIFT,
    TASK_PARTS,
    Pairs,
    PhasePlan,
    PhaseStatistics,
    RoundPlan,
    key_ordered,
    source_bounds,
    source_pairs,
    train_phase,
)
from sgns_spark.train.warm_start import WarmStart, run_parent
from sgns_spark.vocab import ENCODED_SCHEMA

POSITION_SALT = 1  # keeps a sentence's round independent of other hashes of its key
POSITION_RESOLUTION = 1 << 53  # positions are multiples of 2^-53, exact in a double
JOB_GROUP_PREFIX = "sgns-spark-train-"
JOB_GROUP_PROPERTY = "spark.jobGroup.id"
SHUFFLE_KINDS = {"rows": "model_store.py", "pairs": "driver.py"}  # the module whose call names a stage
# phases between two walks of a job's lineage (`walk_lineage`): a walk of 257 phases overflowed a
# driver thread's default stack of 1 MiB, one of 129 (MODE=scaling's 64 shards) did not; one of 41 overflowed
# 200 KiB (the test's)
LINEAGE_WALK_PHASES = 8
SOURCES_SCHEMA = pa.schema([("round_number", pa.int32()), ("source", pa.int64()),
                            ("sentences", pa.binary())])  # an Arrow IPC stream of sentence_key, ids each


class StatisticsParam(AccumulatorParam):
    """Sums `PhaseStatistics` from the tasks (a retried task may count twice; only reports use it)."""

    def zero(self, value: PhaseStatistics) -> PhaseStatistics:
        return PhaseStatistics()

    def addInPlace(self, first: PhaseStatistics, second: PhaseStatistics) -> PhaseStatistics:  # noqa: N802
        return first.add(second)


def sentence_position(seed: int) -> Column:
    """Each sentence's hash position in [0, 1), the same in every epoch (`Round.low`, `Round.high`)."""
    hashed = F.pmod(F.xxhash64("sentence_key", F.lit(seed + POSITION_SALT)), F.lit(POSITION_RESOLUTION))
    return hashed / F.lit(float(POSITION_RESOLUTION))


def run_train_stage(spark: SparkSession, config: Config, storage: Storage) -> dict:
    """Train from the newest committed round (or the initialisation) to the end of the schedule.

    Returns
    -------
    dict
        The stage's run report.
    """
    if not storage.exists(report_path("vocab")):
        raise UserError(f"run root {storage.root} has no vocabulary; run the vocab stage first")
    vocab_report = storage.read_json(report_path("vocab"))
    vocab_size, shards = vocab_report["counts"]["vocab_size"], config.train.num_shards
    if shards > vocab_size:  # groups without words, and num_shards^2 Spark tasks an epoch for them
        raise UserError(f"train.num_shards = {shards} is more than the vocabulary's {vocab_size} words: each word "
                        f"group needs words, and an epoch runs num_shards^2 Spark tasks; lower train.num_shards "
                        f"to at most {vocab_size}")
    settings = {**round_settings(config), "vocab": vocab_report["settings"]}
    if config.train.restart:
        storage.delete(MODEL_DIRECTORY)
        storage.delete(report_path("train"))
    done = completed_report(storage, "train", settings)
    if done is not None:
        return done
    storage.clear_staging()
    report = StageReport("train", settings)
    Trainer(spark, config, storage, vocab_report, settings).run(report)
    document = report.document()
    storage.write_json(report_path("train"), document)
    return document


class Trainer:
    """The driver's state across jobs: vocabulary arrays, the corpus, the schedule."""

    def __init__(self, spark: SparkSession, config: Config, storage: Storage, vocab_report: dict, settings: dict):
        self.spark, self.config, self.storage, self.settings = spark, config, storage, settings
        train = config.train
        vocab = storage.read_parquet(VOCAB_DIRECTORY)
        columns = collect_by_id(vocab, "count", "keep_prob", "noise_weight")
        keep_probability = columns.column("keep_prob").to_numpy()
        noise_weights = columns.column("noise_weight").to_numpy()
        kept_counts = columns.column("count").to_numpy().astype(np.float64) * keep_probability
        self.vocab_size = columns.num_rows
        self.corpus_words = int(vocab_report["counts"]["retained_tokens"])
        self.schedule = rounds(train)
        context = spark.sparkContext
        self.keep_probability = broadcast(context, keep_probability)
        self.noise_weights = broadcast(context, noise_weights)
        self.noise_scales = {groups: noise_scales(kept_counts, noise_weights, groups)
                             for groups in {planned.groups for planned in self.schedule}}
        corpus = storage.read_parquet(CORPUS_DIRECTORY)
        self.corpus = corpus.select("sentence_key", "ids", sentence_position(train.seed).alias("position"))
        self.warm_start = None
        if train.warm_start_from:
            self.warm_start = WarmStart(spark, run_parent(spark, config, storage), vocab.select("word", "id"),
                                        self.vocab_size)
        self.carried = self.warm_start.carried if self.warm_start else None  # a broadcast
        self.commit_seconds = 0.0  # the driver's time moving committed versions into place

    def run(self, report: StageReport) -> None:
        """Train every round not yet committed, one Spark job per committed version."""
        latest = read_latest(self.storage)
        if latest is not None and latest.get("settings") != self.settings:
            raise UserError(
                f"run root {self.storage.root} holds model rounds trained with other settings; "
                "set train.restart=true to start over, or use a new output root"
            )
        resumed_from = latest["round"] if latest else 0
        done, totals = resumed_from, PhaseStatistics()
        words = 0
        group = f"{JOB_GROUP_PREFIX}{uuid.uuid4().hex}"
        self.spark.sparkContext.setJobGroup(group, "sgns-spark train")
        warm_up(self.spark)  # for `spark_figures` at the end
        started = time.perf_counter()
        try:
            while done < len(self.schedule):
                job = self.next_job(done)
                totals = totals.add(self.train_job(job, done, words, started))
                words += round(self.words(job))
                done += len(job)
        finally:
            self.spark.sparkContext.setLocalProperty(JOB_GROUP_PROPERTY, None)
        elapsed = time.perf_counter() - started
        report.counts = {
            "vocab_size": self.vocab_size, "rounds": len(self.schedule), "resumed_from_round": resumed_from,
            "trained_words": words, "pairs": totals.pairs, "mean_loss": totals.loss / max(totals.pairs, 1),
            "words_per_second": words / elapsed if elapsed else 0.0,
            "worker_peak_rss_mib": round(totals.worker_peak_rss_mib, 1), "worker_python": totals.worker_python,
            "task_seconds_by_part": {part: round(totals.seconds.get(part, 0.0), 3) for part in TASK_PARTS},
            "commit_seconds": round(self.commit_seconds, 3),
            **({"warm_start": self.warm_start.counts()} if self.warm_start else {}),
            **self.spark_figures(group),
        }
        report.step("train")

    def spark_figures(self, group: str) -> dict:
        """`sgns_spark.spark_metrics.job_group_metrics` of the training, or none with a warning:
        reading Spark's figures never fails a trained model."""
        try:
            return job_group_metrics(self.spark, group, SHUFFLE_KINDS) or {}
        except (OSError, ValueError, KeyError) as error:  # urllib's errors are OSErrors
            print(f"[train] warning: Spark's stage figures are not in the report ({error})", flush=True)
            return {}

    def next_job(self, done: int) -> list[Round]:
        """The rounds after the first `done` up to the one that passes ``commit_words`` words."""
        job = []
        for planned in self.schedule[done:]:
            job.append(planned)
            if self.words(job) >= self.config.train.commit_words:
                break
        return job

    def words(self, job: list[Round]) -> float:
        """The expected corpus words of some rounds."""
        return sum(planned.progress_span for planned in job) * self.corpus_words

    def round_plan(self, planned: Round) -> RoundPlan:
        return RoundPlan(self.config.train, planned.epoch, planned.number, planned.groups,
                         planned.progress_start, planned.progress_span)

    def train_job(self, job: list[Round], done: int, words_before: float, run_started: float) -> PhaseStatistics:
        """Train `job`'s rounds in one Spark job and commit the last as the newest version (the run
        trained `words_before` words before it, since `run_started`, a `time.perf_counter` time)."""
        train = self.config.train
        started = time.perf_counter()
        first = job[0]
        self.spark.sparkContext.setJobDescription(
            f"sgns-spark train rounds {first.number}-{job[-1].number} of {len(self.schedule)}")
        if done == 0:
            rows = self.first_rows(first.groups)
        else:
            rows = committed_rows(self.storage, done, first.groups, 0)
        statistics = self.spark.sparkContext.accumulator(PhaseStatistics(), StatisticsParam())
        sources = self.job_sources(job)
        kept = [sources]
        phases = 0
        for planned in job:
            plan = self.round_plan(planned)
            pairs = persisted(self.round_pairs(sources, plan, statistics))
            kept.append(pairs)
            following = self.schedule[planned.number] if planned.number < len(self.schedule) else planned
            for phase in range(planned.groups):
                ends_job = planned is job[-1] and phase == planned.groups - 1
                successor = (planned.groups, phase + 1) if phase + 1 < planned.groups else (following.groups, 0)
                phase_plan = PhasePlan(plan, phase, *successor)
                trained = pairs.union(rows).mapPartitionsWithIndex(functools.partial(
                    train_partition, plan=phase_plan, noise_weights=self.noise_weights,
                    noise_scale=self.noise_scales[planned.groups], carried=self.carried, statistics=statistics))
                rows = trained if ends_job else shuffle_rows(trained, successor[0])
                phases += 1
                if phases % LINEAGE_WALK_PHASES == 0:
                    walk_lineage(rows)
        staged = self.storage.staging_path(f"round-{job[-1].number:06d}")
        write_rows(self.spark, rows, self.storage.path(staged))
        for records in kept:
            records.unpersist()
        result = statistics.value
        description = f"rounds {first.number}-{job[-1].number} of {len(self.schedule)}"
        if not math.isfinite(result.loss):
            self.storage.delete(staged)
            warm = f" or train.warm_start_learning_rate (now {train.warm_start_learning_rate})"
            raise UserError(
                f"training diverged in {description}: the loss is not finite; lower train.learning_rate "
                f"(now {train.learning_rate}){warm if self.warm_start else ''}; model round {done} stays the latest"
            )
        last = job[-1]
        committing = time.perf_counter()
        pin = self.warm_start.parent.pin() if self.warm_start else {}
        commit_round(self.storage, staged, {"round": last.number, "epoch": last.epoch,
                                            "round_in_epoch": last.index, "settings": self.settings, **pin},
                     train.keep_rounds)
        self.commit_seconds += time.perf_counter() - committing
        seconds = time.perf_counter() - started
        words = self.words(job)
        left = self.time_left(last.number, words_before + words, run_started)
        print(f"[train] {description} (epoch {last.epoch + 1}/{train.epochs}): {words:,.0f} words in "
              f"{seconds:.1f} s ({words / seconds:,.0f} words/s), loss {result.loss / max(result.pairs, 1):.4f}, "
              f"committed round {last.number}{left}", flush=True)
        return result

    def time_left(self, done: int, trained: float, run_started: float) -> str:
        """``; 40% of the run done, about 2m00s left`` once round `done` is committed, at the rate of
        the `trained` words of this run so far (a resumed run's own); empty after the last round."""
        if done == len(self.schedule):
            return ""
        last = self.schedule[done - 1]
        share = (last.progress_start + last.progress_span) / self.config.train.epochs
        left = self.words(self.schedule[done:]) * (time.perf_counter() - run_started) / trained
        return f"; {share:.0%} of the run done, about {elapsed_text(left)} left"

    def first_rows(self, groups: int) -> RDD:
        """``(task, Rows)`` of round 0: the initialisation, or a warm start's rows."""
        train = self.config.train
        if self.warm_start is None:
            return initial_rows(self.spark, self.vocab_size, train.dim, train.seed, groups, 0)
        counts = self.warm_start.counts()
        print(f"[train] warm start from {self.warm_start.parent.path}: {counts['shared_words']:,} words carried "
              f"over, {counts['new_words']:,} new, {counts['dropped_words']:,} dropped", flush=True)
        return self.warm_start.rows(train.dim, train.seed, groups, 0)

    def job_sources(self, job: list[Round]) -> RDD:
        """The sentences of the job's rounds as numbered sources of pairs, each marked with its round
        (`sentence_sources`), kept for the job: one scan of the corpus per job, not per round.

        The sentences travel to the Python side that makes the pairs as Arrow IPC binary values (4
        bytes a token, about a third of the compact pairs' bytes), so the pairs go straight from the
        Python worker to the shuffle.
        A job that spans more than an epoch holds a sentence once per round it is in.
        """
        position = F.col("position")
        in_job = functools.reduce(operator.or_, [(position >= planned.low) & (position < planned.high)
                                                 for planned in job])
        spans = tuple((planned.number, planned.low, planned.high) for planned in job)
        chunk_rows = self.config.spark.arrow_batch_rows
        sources = self.corpus.where(in_job).mapInArrow(
            functools.partial(sentence_sources, spans=spans, chunk_rows=chunk_rows), spark_schema(SOURCES_SCHEMA))
        return persisted(sources.rdd)

    def round_pairs(self, sources: RDD, plan: RoundPlan, statistics) -> RDD:
        """``(task, Pairs)`` of the round's sources (`job_sources`), keyed by the task of their context group."""
        records = sources.flatMap(functools.partial(
            source_records, plan=plan, keep_probability=self.keep_probability, statistics=statistics))
        return records.partitionBy(plan.groups, task_partition)


def walk_lineage(records: RDD) -> None:
    """Run a Spark job of no tasks on `records`: Spark walks their lineage now, not all at once later.

    After every job Spark walks the lineage of the job's RDD by recursion (``RDD.doCheckpoint``),
    visiting each RDD once in the application. A training job of a few hundred phases is
    thousands of RDDs deep, and that walk overflowed the driver's stack once the job's work was
    done (``java.lang.StackOverflowError``; 2 shards x 150 rounds, or 64 shards x 2 epochs, in one
    job). Walked every `LINEAGE_WALK_PHASES` phases, each walk stops where the one before ended.
    """
    records.context.runJob(records, lambda partition: [], partitions=[])


def sentence_sources(batches: Iterator[pa.RecordBatch], spans: tuple[tuple[int, float, float], ...],
                     chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """Executor side of `Trainer.job_sources`: the scan partition's sentences as numbered sources
    of pairs (`SOURCE_SHIFT`), one Arrow IPC stream each, for each round ``(number, low, high)`` of
    `spans` that holds them (position in [low, high)).

    A round's sentences are cut, in scan order, into chunks of `chunk_rows` (Spark's Arrow batch
    size), and a chunk into runs of its sentences in key order (`source_bounds`). So a round's
    sources, and the draws keyed by their numbers, depend neither on the other rounds of its job
    nor on how Spark batched the job's rows: a resumed job makes the same pairs.
    """
    partition = TaskContext.get().partitionId()
    pending = {number: [] for number, _, _ in spans}  # each round's sentences not yet cut, in scan order
    made = dict.fromkeys(pending, 0)  # sources so far, by round
    for batch in batches:
        position = batch.column("position").to_numpy()
        sentences = batch.select(ENCODED_SCHEMA.names)
        for number, low, high in spans:
            pending[number].append(sentences.filter(pa.array((position >= low) & (position < high))))
            while sum(part.num_rows for part in pending[number]) >= chunk_rows:
                rows = pa.Table.from_batches(pending[number])
                pending[number] = rows.slice(chunk_rows).to_batches()
                yield from round_sources(rows.slice(0, chunk_rows), number, partition, made)
    for number, parts in pending.items():
        if parts:  # none when the partition is empty
            yield from round_sources(pa.Table.from_batches(parts), number, partition, made)


def round_sources(chunk: pa.Table, number: int, partition: int, made: dict[int, int]) -> Iterator[pa.RecordBatch]:
    """One chunk of a round's sentences as sources (`sentence_sources`); counts them in `made`."""
    chunk = key_ordered(chunk.combine_chunks())
    for start, stop in source_bounds(list_lengths(chunk.column("ids").combine_chunks())):
        stream = pa.BufferOutputStream()
        with pa.ipc.new_stream(stream, chunk.schema) as writer:
            writer.write_table(chunk.slice(start, stop - start))
        yield pa.RecordBatch.from_pydict({
            "round_number": [number], "source": [(partition << SOURCE_SHIFT) | made[number]],
            "sentences": [stream.getvalue().to_pybytes()]}, schema=SOURCES_SCHEMA)
        made[number] += 1


def source_records(row, plan: RoundPlan, keep_probability, statistics) -> list[tuple[int, Pairs]]:
    """Executor side of `Trainer.round_pairs`: one source's ``(task, Pairs)`` (`source_pairs`), or
    none when the source belongs to another round of the job."""
    if row["round_number"] != plan.number:
        return []
    started = time.perf_counter()
    sentences = pa.ipc.open_stream(pa.py_buffer(row["sentences"])).read_all()
    found = list(source_pairs(sentences, row["source"], plan, keep_probability.value))
    statistics.add(PhaseStatistics(seconds={"pairs": time.perf_counter() - started}))
    return found


def train_partition(task: int, records: Iterator, plan: PhasePlan, noise_weights, noise_scale: np.ndarray,
                    carried, statistics) -> Iterator:
    """Executor side of a phase: unwrap the broadcasts, train the task's block, report."""
    keyed, result = train_phase(task, (record for _, record in records), plan, noise_weights.value, noise_scale,
                                None if carried is None else carried.value)
    statistics.add(result)
    return iter(keyed)

