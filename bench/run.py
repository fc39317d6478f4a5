"""Benchmark: this project side by side with gensim and Spark MLlib, in one command.

Each system runs alone, one after another (ours and gensim taking turns seed by seed), on the
same tokens (the product's tokenizer's, written out once per corpus, slice and line width), and
every system's vectors are scored by the project's own evaluation code
(DESIGN.md section 5). One JSON file per run goes
to bench-results/, and a markdown table is printed.

    python bench/run.py [--corpus PATH] [--epochs N] [--shards N] [--systems ours,gensim,mllib]
                        [--quick] [--mode default|scaling|size|memory|retrain|profile] [--set KEY=VALUE ...]
                        [--similarity FILE_OR_DIR,...] [--lines N]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "bench-results"
SHARED = REPOSITORY.parent / "shared" / "data"
DEFAULT_CORPUS = SHARED / "enwiki_text8style_1e8.gz"
QUESTIONS = SHARED / "questions-words.txt"
WORDSIM = SHARED / "wordsim353.tsv"
LINE_WORDS = 1000  # gensim's corpus_file mode and MLlib need lines; word2vec.c cuts at 1000 too
LINES_MODES = ("default", "profile")  # the modes that take --lines
SIMLEX_NAME = "simlex999.txt"
QUICK_FRACTION = 0.1
SCALING_SHARDS = (2, 8, 32, 64)
SPARK_FIGURES = ("spark_stages", "shuffle_bytes", "shuffle_remote_bytes_read", "task_seconds", "critical_path_seconds")
SIZE_FRACTIONS = (0.25, 0.5, 1.0)
RETRAIN_FIRST_FRACTION = 0.5  # v1 trains on this first share of the corpus
RETRAIN_RATES = (0.025, 0.01, 0.005, 0.0025, 0.0)  # train.warm_start_learning_rate settings compared
MASTER = "local[2]"
SYSTEMS = ("ours", "gensim", "mllib")  # the systems the benchmark compares
SETTINGS = {"dim": 100, "window": 5, "negative": 5, "sample": 1e-3, "min_count": 5}
KIB_PER_MIB = 1024
READ_CHUNK = 1 << 20  # characters read at a time while streaming the corpus
OWN_LINES = 0  # --lines 0: the corpus's own lines (books, chat, titles), not lines cut to a width
CACHE_FORMAT = "tokens"  # in a prepared corpus's name: tokenized as the product does (were split at spaces)
MEMORY_VOCABS = (100_000, 2_000_000)  # vocabulary sizes compared by the memory mode
MEMORY_TOKENS = 10_000_000  # Zipf draws of the memory corpus, besides one occurrence per word
MEMORY_SETTINGS = {**SETTINGS, "dim": 128, "min_count": 1}
MEMORY_STAGES = ("vocab", "train")  # one process each, so each driver peak is the stage's own
MEMORY_SEED = 1
ZIPF_EXPONENT = 1.0
FLOAT32_BYTES = 4
BYTES_PER_MIB = 1 << 20
PROFILE_BLOCK_FRACTION = 0.3  # the kernel's fixed block: the corpus's first 30% (about 5M tokens)
PROFILE_CORES = 2  # the cores of MASTER: the epoch's core-seconds are its wall time x these
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MICROSECONDS = 1e6
CPU_INFO = Path("/proc/cpuinfo")
VECTOR_FLAGS = ("avx512f", "avx2")  # the widest SIMD a host offers, widest first
# the kernel's float32 loops whose dispatched SIMD target has moved its speed (`sigmoid_complement`)
KERNEL_UFUNCS = ("exp", "divide")
OVERRIDES: dict[str, str] = {}  # --set KEY=VALUE: settings of every run of ours (filled once, by main)
HELD_OUT: list[Path] = []  # --similarity: the user's own similarity sets, scored for every system (filled by main)


def corpus_text(source: Path) -> Iterator[str]:
    """The corpus's text in pieces of about `READ_CHUNK` characters, each cut after a space or a
    line end, so that no token spans two pieces (streaming: the bench process stays small, since
    a child forked from it inherits its peak RSS, which would then be misreported as the child's)."""
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", encoding="utf-8", errors="replace") as stream:
        tail = ""
        while chunk := stream.read(READ_CHUNK):
            text = tail + chunk
            cut = max(text.rfind(" "), text.rfind("\n")) + 1
            tail = text[cut:]
            if cut:
                yield text[:cut]
        if tail:
            yield tail


def corpus_runs(source: Path, settings) -> Iterator[tuple[list[str], bool]]:
    """The corpus's tokens as the product's tokenizer makes them (`sgns_spark.tokenize.split_text`
    with `settings`, a `CorpusSettings`), in runs that each lie within one line of the corpus,
    each with whether it ends its line (a piece's last line goes on in the next piece)."""
    import numpy as np

    from sgns_spark.tokenize import split_text

    for text in corpus_text(source):
        tokens, line_lengths = split_text(text, settings)
        words = tokens.to_pylist()
        line_ends = np.cumsum(line_lengths).tolist()
        starts = [0, *line_ends[:-1]]
        for line, (start, end) in enumerate(zip(starts, line_ends, strict=True)):
            yield words[start:end], line < len(line_ends) - 1


def child_prepare(source: Path, fraction: float, line_words: int, output: Path) -> None:
    """`prepare_corpus`'s work, in a child (its numpy, pyarrow and token lists stay out of the
    bench process): the first `fraction` of the corpus's tokens in lines of `line_words` words,
    or in the corpus's own lines (`OWN_LINES`), longer ones cut at ``corpus.max_sentence_length``
    words as the product cuts them; empty lines dropped. Writes `output` and its word count."""
    sys.path.insert(0, str(REPOSITORY))
    from sgns_spark.config import load_config

    corpus = load_config(None, [f"{key}={value}" for key, value in OVERRIDES.items()
                                if key.startswith("corpus.")]).corpus
    # a slice needs the corpus's size first; the whole corpus needs no counting pass
    limit = sys.maxsize if fraction >= 1 else int(sum(len(run) for run, _ in corpus_runs(source, corpus)) * fraction)
    width = corpus.max_sentence_length if line_words == OWN_LINES else line_words
    written = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as out:
        pending: list[str] = []
        for run, ends_line in corpus_runs(source, corpus):
            taken = run[: limit - written]
            pending.extend(taken)
            written += len(taken)
            full = len(pending) - len(pending) % width
            out.writelines(" ".join(pending[start : start + width]) + "\n" for start in range(0, full, width))
            pending = pending[full:]
            if pending and (written == limit or (ends_line and line_words == OWN_LINES)):
                out.write(" ".join(pending) + "\n")
                pending = []
            if written == limit:
                break
        if pending:
            out.write(" ".join(pending) + "\n")
    output.with_suffix(".words").write_text(str(written))


def prepare_corpus(source: Path, fraction: float, line_words: int = LINE_WORDS) -> tuple[Path, int]:
    """The first `fraction` of the corpus's tokens, tokenized as the product does, so that every
    system trains on the same tokens, as lines of `line_words` words or the corpus's own lines
    (`OWN_LINES`; cached by `child_prepare`)."""
    lines = {LINE_WORDS: "", OWN_LINES: "-own-lines"}.get(line_words, f"-lines{line_words}")
    settings = "".join(f"-{key}={value}" for key, value in sorted(OVERRIDES.items()) if key.startswith("corpus."))
    target = RESULTS / "cache" / f"{source.name.split('.')[0]}-{fraction:g}{lines}{settings}-{CACHE_FORMAT}.txt"
    counted = target.with_suffix(".words")
    if not counted.exists():
        run_measured([sys.executable, __file__, "--child", "prepare", "--corpus", str(source), "--fraction",
                      repr(fraction), "--lines", str(line_words), "--child-output", str(target),
                      *(f"--set={key}={value}" for key, value in OVERRIDES.items())])
    return target, int(counted.read_text())


def zipf_corpus(vocab_size: int, zipf_tokens: int) -> tuple[Path, int]:
    """A synthetic corpus over exactly `vocab_size` words (cached): every word once, plus
    `zipf_tokens` draws from a Zipf law over the same words, shuffled into 1000-word lines."""
    target = RESULTS / "cache" / f"zipf-{vocab_size}-{zipf_tokens}.txt"
    if not target.exists():
        import numpy as np

        rng = np.random.default_rng(MEMORY_SEED)
        cumulative = np.cumsum(1.0 / np.arange(1, vocab_size + 1) ** ZIPF_EXPONENT)  # (vocab,)
        draws = np.searchsorted(cumulative, rng.random(zipf_tokens) * cumulative[-1], side="right")
        ids = rng.permutation(np.concatenate([np.arange(vocab_size), draws]))  # (tokens,)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="ascii") as out:
            for start in range(0, ids.size, LINE_WORDS):
                out.write(" ".join(f"w{word}" for word in ids[start : start + LINE_WORDS].tolist()) + "\n")
    return target, vocab_size + zipf_tokens


def run_memory(fraction: float, epochs: int, shards: int) -> list[dict]:
    """The pipeline on Zipf corpora of a small and a large vocabulary, same token count."""
    rows = []
    for vocab_size in MEMORY_VOCABS:
        size = int(vocab_size * fraction)
        corpus, words = zipf_corpus(size, int(MEMORY_TOKENS * fraction))
        row = run_ours(corpus, words, epochs, shards, f"memory-{size}", MEMORY_SETTINGS, MEMORY_STAGES)
        row["parameters_mib"] = 2 * row["vocab_size"] * row["dim"] * FLOAT32_BYTES / BYTES_PER_MIB
        rows.append(row)
    return rows


def run_measured(command: list[str], environment: dict | None = None) -> float:
    """Run a command to completion (`environment` added to ours); return its peak RSS in MiB
    (its own, via wait4)."""
    process = subprocess.Popen(command, env={**os.environ, **(environment or {})})
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: {command[1]} failed with exit code {os.waitstatus_to_exitcode(status)}")
    return usage.ru_maxrss / KIB_PER_MIB


def shared_settings(settings: dict) -> dict:
    """Our settings for the ones every system shares (`SETTINGS`), on the bench's master."""
    return {"spark.master": MASTER, "train.dim": settings["dim"], "train.window": settings["window"],
            "train.negative": settings["negative"], "vocab.sample": settings["sample"],
            "vocab.min_count": settings["min_count"]}


def run_ours(corpus: Path, words: int, epochs: int, shards: int, tag: str,
             settings: dict = SETTINGS, stages: tuple[str, ...] = (), extra: dict | None = None) -> dict:
    """The project's pipeline, timed per stage from its reports, scored from its manifest.

    With `stages` given, each of those stage jobs runs in its own process instead of
    jobs/pipeline.py, so each report's driver peak RSS is that stage's own; no scores then.
    """
    root = RESULTS / "runs" / tag
    subprocess.run(["rm", "-rf", str(root)], check=True)
    overrides = {**shared_settings(settings), "spark.driver_memory": "4g", "train.epochs": epochs,
                 "train.num_shards": shards, **OVERRIDES, **(extra or {})}
    evaluate = not stages
    if evaluate:
        overrides.update({"evaluate.analogy_path": QUESTIONS, "evaluate.similarity_path": WORDSIM})
    settings_arguments = [argument for key, value in overrides.items() for argument in ("--set", f"{key}={value}")]
    commands = [[str(REPOSITORY / "jobs" / f"{job}.py"), "--root", str(root),
                 *(["--input", str(corpus)] if job in ("vocab", "pipeline") else []), *settings_arguments]
                for job in stages or ("pipeline",)]
    started = time.perf_counter()
    for command in commands:
        run_measured([sys.executable, *command])
    wall = time.perf_counter() - started
    reports = {stage: json.loads((root / "reports" / f"{stage}.json").read_text())
               for stage in stages or ("vocab", "train", "export")}
    train_seconds = reports["train"]["seconds"]["total"]
    row = {
        "system": "ours", "epochs": epochs, "shards": shards, "corpus_words": words,
        "vocab_size": reports["train"]["counts"]["vocab_size"], "dim": settings["dim"],
        "vocab_s": reports["vocab"]["seconds"]["total"], "train_s": train_seconds,
        "export_s": reports["export"]["seconds"]["total"] if "export" in reports else None, "wall_s": wall,
        "words_per_s": words * epochs / train_seconds,
        "driver_rss_mib": max(r["driver_peak_rss_mib"] for r in reports.values()),
        **{f"driver_rss_{stage}_mib": report["driver_peak_rss_mib"] for stage, report in reports.items()},
        "worker_rss_mib": reports["train"]["counts"]["worker_peak_rss_mib"],
        **{figure: reports["train"]["counts"].get(figure) for figure in SPARK_FIGURES},
        **{f"{kind}_shuffle_bytes": size
           for kind, size in reports["train"]["counts"].get("shuffle_bytes_by_kind", {}).items()},
    }
    if evaluate:
        version = published_version(root)
        evaluation = json.loads((version / "manifest.json").read_text())["evaluation"]
        row.update(analogy=evaluation["analogy"]["accuracy"], analogy_coverage=evaluation["analogy"]["coverage"],
                   ws353=evaluation["similarity"]["spearman"], version=str(version))
    return row


def published_version(root: Path) -> Path:
    """The newest published version directory of a run root."""
    return Path(json.loads((root / "export" / "_LATEST").read_text())["path"].removeprefix("file:"))


def run_retrain(fraction: float, source: Path, epochs: int, shards: int) -> list[dict]:
    """v1 on the first half; then warm starts from v1 (one per learning rate) and a cold start on
    the whole corpus, each with its drift from v1."""
    half, half_words = prepare_corpus(source, RETRAIN_FIRST_FRACTION * fraction)
    corpus, words = prepare_corpus(source, fraction)
    first = {**run_ours(half, half_words, epochs, shards, "retrain-v1"), "run": "v1"}
    parent = RESULTS / "runs" / "retrain-v1" / "export"
    rows = [first]
    for rate in RETRAIN_RATES:
        extra = {"train.warm_start_from": parent, "train.warm_start_learning_rate": rate}
        rows.append({**run_ours(corpus, words, epochs, shards, f"retrain-warm-{rate}", extra=extra),
                     "run": f"(a) warm, rate {rate}"})
    rows.append({**run_ours(corpus, words, epochs, shards, "retrain-cold"), "run": "(b) cold"})
    for row in rows[1:]:
        output = RESULTS / "cache" / f"drift-{os.getpid()}.json"
        run_measured([sys.executable, __file__, "--child", "drift", "--corpus", row["version"],
                      "--parent", first["version"], "--child-output", str(output)])
        row.update(json.loads(output.read_text()))
    return rows


def child_drift(version: Path, parent: Path, output: Path) -> None:
    """The drift of one published version from another (sgns_spark.drift, on local Spark)."""
    sys.path.insert(0, str(REPOSITORY))
    from sgns_spark.config import load_config
    from sgns_spark.drift import drift_report
    from sgns_spark.session import build_session

    spark = build_session(load_config(None, [f"spark.master={MASTER}"]), "bench-drift")
    frames = [spark.read.parquet(str(path / "vectors.parquet")) for path in (version, parent)]
    dim = json.loads((version / "manifest.json").read_text())["dim"]
    output.write_text(json.dumps(drift_report(spark, *frames, dim)))
    spark.stop()


def run_in_child(system: str, corpus: Path, words: int, epochs: int, shards: int, seed: int = 1,
                 arguments: tuple[str, ...] = (), environment: dict | None = None) -> dict:
    """Run a reference system in a fresh process so its peak RSS is its own (`arguments` and
    `environment` added to its command and to ours)."""
    output = RESULTS / "cache" / f"{system}-{os.getpid()}.json"
    peak = run_measured([sys.executable, __file__, "--child", system, "--corpus", str(corpus),
                         "--epochs", str(epochs), "--shards", str(shards), "--seed", str(seed),
                         "--child-output", str(output), *held_out_arguments(), *arguments], environment)
    result = json.loads(output.read_text())
    result.update(corpus_words=words, words_per_s=words * epochs / result["train_s"], driver_rss_mib=peak)
    return result


def simlex_path() -> Path | None:
    """SimLex-999 as the gensim package ships it in its test data (never copied into this
    repository); None without gensim. Found without importing gensim into the bench process."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "test" / "test_data" / SIMLEX_NAME
    return path if path.exists() else None


def held_out_sets(paths: str) -> list[Path]:
    """The similarity sets of ``--similarity``: comma-separated files, or directories whose
    visible files are each a set; every one named by its file's stem, which must be unique."""
    sets = []
    for path in map(Path, paths.split(",")):
        if not path.exists():
            sys.exit(f"bench: similarity set {path} is absent (make bench SIMILARITY=...)")
        sets += sorted(file for file in path.iterdir() if file.is_file() and not file.name.startswith(".")) \
            if path.is_dir() else [path]
    sys.path.insert(0, str(REPOSITORY))
    from sgns_spark.errors import UserError
    from sgns_spark.evaluate import read_similarity_pairs

    for file in sets:  # a set that does not parse stops the command now, not after the training
        try:
            read_similarity_pairs(file)
        except UserError as error:
            sys.exit(f"bench: {error} (make bench SIMILARITY=...)")
    stems = [file.stem for file in sets]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1} | set(stems) & set(MEASURES))
    if repeated:
        sys.exit(f"bench: two similarity sets, or a set and a measure, are both named {repeated[0]!r}; "
                 "rename one (make bench SIMILARITY=...)")
    return sets


def held_out_arguments() -> list[str]:
    """``--similarity`` as main was given it, for a child process that scores vectors."""
    return ["--similarity", ",".join(map(str, HELD_OUT))] if HELD_OUT else []


def measures() -> tuple[str, ...]:
    """The quality measures of every row: `MEASURES`, then each held-out set's Spearman rho."""
    return (*MEASURES, *(path.stem for path in HELD_OUT))


def score(path: Path) -> dict:
    """Analogy, WS353, (when gensim is installed) SimLex-999 and every held-out set (`HELD_OUT`)
    of a word2vec text file."""
    sys.path.insert(0, str(REPOSITORY))
    from sgns_spark.evaluate import analogy_accuracy, similarity_spearman
    from sgns_spark.vectors import Vectors

    vectors = Vectors.load_word2vec_format(path)
    analogy = analogy_accuracy(vectors, QUESTIONS)
    simlex = simlex_path()
    return {"analogy": analogy["accuracy"], "analogy_coverage": analogy["coverage"],
            "ws353": similarity_spearman(vectors, WORDSIM)["spearman"],
            "simlex": similarity_spearman(vectors, simlex)["spearman"] if simlex else None,
            **{held_out.stem: similarity_spearman(vectors, held_out)["spearman"] for held_out in HELD_OUT}}


def child_score(vectors_path: Path, output: Path) -> None:
    output.write_text(json.dumps(score(vectors_path)))


def scores_of_ours(row: dict) -> dict:
    """Our published version's SimLex-999 and held-out sets (scored in a child, like the
    reference systems; analogy and WS353 come from its manifest)."""
    output = RESULTS / "cache" / f"score-{os.getpid()}.json"
    run_measured([sys.executable, __file__, "--child", "score", "--corpus", str(Path(row["version"]) / "vectors.txt"),
                  "--child-output", str(output), *held_out_arguments()])
    scores = json.loads(output.read_text())
    return {**row, **{key: scores[key] for key in measures()[2:]}}


def child_gensim(corpus: Path, epochs: int, output: Path, workers: int, seed: int) -> None:
    from gensim.models import Word2Vec

    # its vocabulary scan and its training are timed apart, like our vocab and train stages
    model = Word2Vec(sg=1, vector_size=SETTINGS["dim"], window=SETTINGS["window"], negative=SETTINGS["negative"],
                     sample=SETTINGS["sample"], min_count=SETTINGS["min_count"], workers=workers, epochs=epochs,
                     seed=seed)
    started = time.perf_counter()
    model.build_vocab(corpus_file=str(corpus))
    scanned = time.perf_counter()
    model.train(corpus_file=str(corpus), total_words=model.corpus_total_words, epochs=epochs)
    trained = time.perf_counter()
    vectors_path = output.with_suffix(".txt")
    model.wv.save_word2vec_format(str(vectors_path))
    output.write_text(json.dumps({"system": "gensim", "epochs": epochs, "shards": workers, "seed": seed,
                                  "vocab_s": scanned - started, "train_s": trained - scanned,
                                  **score(vectors_path)}))


def run_profile(source: Path, fraction: float, epochs: int, shards: int, line_words: int) -> list[dict]:
    """One epoch of ours split into parts, and the kernel on one core beside gensim with 1 worker
    on one fixed block of the corpus (`PROFILE_BLOCK_FRACTION`), both in lines of `line_words`."""
    corpus, words = prepare_corpus(source, fraction, line_words)
    epoch = run_ours(corpus, words, epochs, shards, "profile")
    report = json.loads((RESULTS / "runs" / "profile" / "reports" / "train.json").read_text())
    block, block_words = prepare_corpus(source, PROFILE_BLOCK_FRACTION * fraction, line_words)
    output = RESULTS / "cache" / f"kernel-{os.getpid()}.json"
    settings = [f"--set={key}={value}" for key, value in OVERRIDES.items()]
    run_measured([sys.executable, __file__, "--child", "kernel", "--corpus", str(block), "--shards", str(shards),
                  "--child-output", str(output), *settings], SINGLE_THREAD)
    kernel = json.loads(output.read_text())
    gensim = run_in_child("gensim", block, block_words, 1, shards, arguments=("--workers", "1"),
                          environment=SINGLE_THREAD)
    return [{**epoch, "split": epoch_split(report), "kernel": kernel,
             "gensim_1_worker": {key: gensim[key] for key in ("train_s", "corpus_words", "words_per_s")}}]


def epoch_split(report: dict) -> dict:
    """The training's core-seconds (wall x `PROFILE_CORES`) by part, in wall seconds.

    The tasks time their own parts (``task_seconds_by_part``); the rest of Spark's task time
    (``task_seconds``: shuffle reads and writes, pickling, Arrow, the Parquet write of each
    version) is movement; the driver's commit leaves every core idle; and so does the driver's
    time between tasks (scheduling, the serial warm-up's idle core, a phase's slowest task).
    """
    counts, wall = report["counts"], report["seconds"]["total"]
    parts = counts["task_seconds_by_part"]
    core_seconds = {
        "pair generation": parts["pairs"],
        "row and pair movement": counts["task_seconds"] - parts["pairs"] - parts["kernel"],
        "kernel": parts["kernel"],
        "commit": counts["commit_seconds"] * PROFILE_CORES,
    }
    core_seconds["driver idle"] = wall * PROFILE_CORES - sum(core_seconds.values())
    return {part: seconds / PROFILE_CORES for part, seconds in core_seconds.items()}


def child_kernel(corpus: Path, shards: int, output: Path) -> None:
    """The product's kernel on one core: the block's vocabulary and pairs by the product's own
    stages (the vocabulary on local Spark, then Spark is stopped), then one round of `shards`
    word groups, every task's block of every phase in turn (`sgns_spark.train.task.train_block`),
    timed alone: the kernel's work in the epoch's rounds, where a unit holds 1 / shards of a
    context position's pairs."""
    sys.path.insert(0, str(REPOSITORY))
    import pyarrow.parquet as pq

    from sgns_spark.config import load_config
    from sgns_spark.preflight import corpus_input
    from sgns_spark.session import build_session
    from sgns_spark.stages import run_vocab_stage
    from sgns_spark.storage import Storage
    from sgns_spark.train.model_store import INIT_BLOCK_ROWS, initial_block
    from sgns_spark.train.schedule import INPUT_SIDE, OUTPUT_SIDE, noise_scales
    from sgns_spark.train.task import PhasePlan, RoundPlan, local_rows, source_pairs, train_block

    root = RESULTS / "runs" / "profile-block"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    config = load_config(None, [f"{key}={value}" for key, value in {**shared_settings(SETTINGS), **OVERRIDES}.items()])
    spark = build_session(config, "bench-kernel")
    run_vocab_stage(spark, config, corpus_input(spark, str(corpus)), Storage(spark, str(root)))
    spark.stop()
    vocab = pq.read_table(root / "vocab").sort_by("id")
    sentences = pq.read_table(root / "corpus", columns=["sentence_key", "ids"])
    keep, noise = vocab.column("keep_prob").to_numpy(), vocab.column("noise_weight").to_numpy()
    plan = RoundPlan(config.train, 0, 1, shards, 0.0, 1.0)
    parts = list(source_pairs(sentences, 0, plan, keep))  # (task, Pairs) of every block
    vocab_size, dim = vocab.num_rows, config.train.dim
    chunks = [chunk for block in range(-(-vocab_size // INIT_BLOCK_ROWS))
              for _, chunk in initial_block(block, vocab_size, dim, config.train.seed, shards, 0, None)]
    rows = {(side, group): local_rows([chunk for chunk in chunks if (chunk.side, chunk.group) == (side, group)], dim)
            for side in (INPUT_SIDE, OUTPUT_SIDE) for group in range(shards)}
    scale = noise_scales(vocab.column("count").to_numpy() * keep, noise, shards)
    seconds, pairs = 0.0, 0
    for phase in range(shards):
        for task in range(shards):
            block = [part for owner, part in parts if owner == task and part.stratum == phase]
            started = time.perf_counter()
            _, block_pairs = train_block(rows[INPUT_SIDE, task], rows[OUTPUT_SIDE, (task + phase) % shards], block,
                                         PhasePlan(plan, phase, shards, (phase + 1) % shards), noise, scale, task,
                                         None)
            seconds += time.perf_counter() - started
            pairs += block_pairs
    tokens = len(sentences.column("ids").combine_chunks().flatten())
    output.write_text(json.dumps({"tokens": tokens, "pairs": pairs, "seconds": seconds,
                                  "microseconds_per_pair": seconds / pairs * MICROSECONDS,
                                  "words_per_s": tokens / seconds}))


def child_mllib(corpus: Path, epochs: int, shards: int, output: Path) -> None:
    from pyspark.ml.feature import Word2Vec
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master(MASTER).config("spark.driver.memory", "6g")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    sentences = spark.read.text(str(corpus)).select(F.split("value", " ").alias("words")).cache()
    sentences.count()
    estimator = Word2Vec(vectorSize=SETTINGS["dim"], windowSize=SETTINGS["window"],
                         minCount=SETTINGS["min_count"], numPartitions=shards, maxIter=epochs,
                         seed=1, maxSentenceLength=LINE_WORDS, inputCol="words")
    started = time.perf_counter()
    model = estimator.fit(sentences)
    train_seconds = time.perf_counter() - started
    counts = sentences.select(F.explode("words").alias("word")).groupBy("word").count()
    # MLlib's vectors come in no particular order; the analogy needs the most frequent first
    table = model.getVectors().join(counts, "word").orderBy(F.desc("count"), "word").toArrow()
    vectors_path = output.with_suffix(".txt")
    with open(vectors_path, "w", encoding="utf-8") as out:
        out.write(f"{table.num_rows} {SETTINGS['dim']}\n")
        for word, vector in zip(table.column("word").to_pylist(), table.column("vector").to_pylist(), strict=True):
            values = vector["values"] if isinstance(vector, dict) else vector
            out.write(word + " " + " ".join(f"{v:.6g}" for v in values) + "\n")
    spark.stop()
    output.write_text(json.dumps({"system": "mllib", "epochs": epochs, "shards": shards,
                                  "train_s": train_seconds, **score(vectors_path)}))


MEASURES = ("analogy", "ws353", "simlex")


def machine() -> dict:
    """The host the figures were measured on. Between sessions the same code's speed has moved by
    half (our kernel on one core: 0.69 to 1.07 us per pair), so figures from different hosts do
    not compare; ratios within one command do. Besides the CPU, the numpy build the kernel ran on:
    the SIMD target numpy dispatches each of `KERNEL_UFUNCS` to on float32 here, which the CPU's
    flags do not tell (a loop may have no build for the widest target), and its BLAS."""
    import numpy  # here, after the runs: children forked from the bench process inherit its size
    from numpy.lib.introspect import opt_func_info

    model, flags = platform.processor() or platform.machine(), set()
    if CPU_INFO.exists():
        lines = CPU_INFO.read_text().splitlines()
        fields = dict(map(str.strip, line.split(":", 1)) for line in lines if ":" in line)
        model = fields.get("model name", model)
        flags = set(fields.get("flags", "").split())
    vector = next((flag for flag in VECTOR_FLAGS if flag in flags), "unknown")
    loops = opt_func_info(func_name=f"^({'|'.join(KERNEL_UFUNCS)})$", signature="float32")
    # a build that names no BLAS must not cost the record of a whole command (this runs before it is written)
    blas = numpy.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    return {"cpu": model, "cores": os.cpu_count(), "widest_simd": vector, "numpy": numpy.__version__,
            "numpy_float32_loops": {name: dispatched_target(loops, name) for name in KERNEL_UFUNCS},
            "blas": f"{blas.get('name', 'unknown BLAS')} {blas.get('version', '')}".strip()}


def dispatched_target(loops: dict, name: str) -> str:
    """The target of ufunc `name`'s first float32 loop in ``opt_func_info``'s answer `loops`, or
    "unknown" where the build lists none."""
    signatures = loops.get(name, {})
    return next(iter(signatures.values()))["current"] if signatures else "unknown"


def seeded_turns(systems: list[str], seeds: dict[str, list[str]]) -> list[tuple[str, int]]:
    """The runs of the default mode, in order: ours and gensim take turns, seed by seed, and the
    system that starts a turn alternates (ours 1, gensim 1, gensim 2, ours 2, ours 3, ..), so that
    the machine's drift over the command (its speed swings by a third within minutes) weighs on
    both systems alike and each turn's pair of runs is a same-minute comparison (`paired_ratios`);
    MLlib runs once, last."""
    seeded = [system for system in ("ours", "gensim") if system in systems]
    turns = []
    for turn in range(max((len(seeds[system]) for system in seeded), default=0)):
        ordered = seeded if turn % 2 == 0 else seeded[::-1]
        turns += [(system, int(seeds[system][turn])) for system in ordered if turn < len(seeds[system])]
    return turns + [(system, 1) for system in systems if system not in seeded]


def paired_ratios(rows: list[dict]) -> list[float]:
    """Our training words/s over gensim's, turn by turn (`seeded_turns`): ours's i-th run against
    gensim's i-th run, which ran next to it."""
    ours, gensim = ([row for row in rows if row["system"] == system] for system in ("ours", "gensim"))
    return [mine["words_per_s"] / theirs["words_per_s"] for mine, theirs in zip(ours, gensim, strict=False)]


def seed_mean(rows: list[dict], system: str) -> dict | None:
    """The runs of one system: the only one, or with several seeds a mean row (``system mean``)
    that carries their spread (max - min) of every measure; None without a run."""
    seeds = [row for row in rows if row["system"] == system]
    if len(seeds) < 2:
        return seeds[0] if seeds else None
    averaged = [key for key in ("vocab_s", "train_s", "words_per_s", *measures()) if seeds[0].get(key) is not None]
    return {"system": f"{system} mean", "seed": ",".join(str(row["seed"]) for row in seeds),
            **{key: sum(row[key] for row in seeds) / len(seeds) for key in averaged},
            "spread": {key: max(row[key] for row in seeds) - min(row[key] for row in seeds)
                       for key in measures() if key in averaged}}


def markdown(rows: list[dict]) -> str:
    """One row per run; a system run with several seeds (ours or gensim) also gets its mean row,
    which the ratios compare, and its spread."""
    columns = ["system", "seed", "epochs", "shards", "lines", "vocab_s", "train_s", "export_s", "words_per_s",
               "driver_rss_mib", "worker_rss_mib", "analogy", "analogy_coverage", *measures()[1:]]
    summaries = {system: seed_mean(rows, system) for system in SYSTEMS}
    means = [summary for summary in summaries.values() if summary and "spread" in summary]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows + means:
        cells = []
        for column in columns:
            value = row.get(column, "")
            if isinstance(value, float):
                value = f"{value:.1%}" if column.startswith("analogy") else (
                    f"{value:.3f}" if column in measures() else f"{value:,.0f}")
            cells.append("" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    for mean in means:
        spread = ", ".join(f"{key} {value:.3f}" for key, value in mean["spread"].items())
        lines.append(f"\n{mean['system'][: -len(' mean')]}: spread over seeds {mean['seed']} (max - min): {spread}")
    ours = summaries["ours"]
    ratios = paired_ratios(rows)
    if len(ratios) > 1:
        lines.append(f"\nours/gensim training words/s turn by turn (each pair ran back to back): "
                     f"{', '.join(f'{ratio:.2f}x' for ratio in ratios)}; median {statistics.median(ratios):.2f}x")
    for reference in ("gensim", "mllib"):
        other = summaries[reference]
        if ours and other:
            differences = ", ".join(f"{key} {ours[key] - other[key]:+.3f}" for key in measures()[1:]
                                    if ours.get(key) is not None and other.get(key) is not None)
            through = ""
            if other.get("vocab_s"):
                both = (other["vocab_s"] + other["train_s"]) / (ours["vocab_s"] + ours["train_s"])
                through = f" (vocabulary and training: {both:.2f}x)"
            lines.append(
                f"\n{ours['system']}/{other['system']}: training words/s "
                f"{ours['words_per_s'] / other['words_per_s']:.2f}x{through}, "
                f"analogy {ours['analogy'] - other['analogy']:+.1%} points, {differences}"
            )
    return "\n".join(lines)


def scaling_markdown(rows: list[dict]) -> str:
    """Quality and Spark's own figures against the shard count (critical path: a cluster with one
    core per shard on a free network)."""
    columns = ["shards", "analogy", "ws353", "train_s", "spark_stages", "pairs_shuffle_bytes", "rows_shuffle_bytes",
               "shuffle_remote_bytes_read", "task_seconds", "critical_path_seconds"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row['shards']}", f"{row['analogy']:.1%}", f"{row['ws353']:.3f}"]
        cells += [f"{row.get(column) or 0:,.0f}" for column in columns[3:]]
        lines.append("| " + " | ".join(cells) + " |")
    base = rows[0]
    for row in rows[1:]:
        lines.append(
            f"\n{row['shards']} vs {base['shards']} shards: analogy {row['analogy'] - base['analogy']:+.1%} points, "
            f"WS353 {row['ws353'] - base['ws353']:+.3f}, "
            f"stages {row['spark_stages']} (budget {2 * row['shards'] + 10}), "
            f"shuffle bytes {row['shuffle_bytes'] / base['shuffle_bytes']:.1f}x, "
            f"critical path {row['critical_path_seconds'] / base['critical_path_seconds']:.2f}x")
    return "\n".join(lines)


def retrain_markdown(rows: list[dict]) -> str:
    """Quality, time and drift from v1 of the retraining scenario."""
    columns = ["run", "analogy", "ws353", "train_s", "neighbour_overlap", "mean_cosine_aligned", "mean_cosine"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["run"], f"{row['analogy']:.1%}", f"{row['ws353']:.3f}", f"{row['train_s']:,.0f}"]
        cells += [f"{row[column]:.3f}" if column in row else "" for column in columns[4:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile_markdown(rows: list[dict]) -> str:
    """The epoch's wall time by part, and the kernel against gensim, both on one core."""
    row = rows[0]
    split, kernel, gensim = row["split"], row["kernel"], row["gensim_1_worker"]
    total = sum(split.values())
    lines = ["| part | seconds | share |", "|---|---|---|"]
    lines += [f"| {part} | {seconds:,.1f} | {seconds / total:.1%} |" for part, seconds in split.items()]
    lines.append(f"| all (train wall) | {total:,.1f} | 100% |")
    lines.append(f"\nnot the kernel: {1 - split['kernel'] / total:.1%} of the epoch; "
                 f"{row['words_per_s']:,.0f} words/s, analogy {row['analogy']:.1%}, WS353 {row['ws353']:.3f}")
    lines.append(f"kernel on one core, fixed block ({kernel['tokens']:,} tokens, {kernel['pairs']:,} pairs, "
                 f"one round of {row['shards']} word groups): "
                 f"{kernel['microseconds_per_pair']:.3f} us/pair, {kernel['words_per_s']:,.0f} words/s")
    lines.append(f"gensim, 1 worker, the same block: {gensim['words_per_s']:,.0f} words/s; "
                 f"our kernel / gensim per core: {kernel['words_per_s'] / gensim['words_per_s']:.2f}x")
    return "\n".join(lines)


def memory_markdown(rows: list[dict]) -> str:
    """Peak RSS per stage (each stage its own driver process) against the model's size."""
    columns = ["vocab_size", "dim", "parameters_mib", "corpus_words", "train_s", "driver_rss_vocab_mib",
               "driver_rss_train_mib", "worker_rss_mib"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[column]:,.0f}" for column in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--quick", action="store_true", help=f"first {QUICK_FRACTION * 100:.0f}%% of the corpus")
    parser.add_argument("--mode", choices=("default", "scaling", "size", "memory", "retrain", "profile"),
                        default="default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of every run of ours, e.g. train.noise_pool=64 (make bench SET=...)")
    parser.add_argument("--child", choices=("gensim", "mllib", "drift", "kernel", "score", "prepare"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--lines", type=int, default=LINE_WORDS,
                        help=f"words per line of the corpus (modes {', '.join(LINES_MODES)}), e.g. 12 for short "
                             f"sentences; {OWN_LINES} keeps the corpus's own lines (books, chat)")
    parser.add_argument("--gensim-seeds", default="1",
                        help="gensim's seeds, e.g. 1,2,3: it is compared by its mean, with the spread shown")
    parser.add_argument("--ours-seeds",
                        help="our train.seed values, e.g. 1,2,3: compared by their mean, with the spread shown "
                             "(default: --set's train.seed, else 1)")
    parser.add_argument("--similarity",
                        help="more similarity sets to score every system on (word, word, score a line): files or "
                             "directories of files, comma-separated; each is a column named by its file's stem")
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fraction", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--parent", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    malformed = [assignment for assignment in arguments.set if "=" not in assignment]
    if malformed:
        parser.error(f"--set {malformed[0]!r} must look like KEY=VALUE, e.g. train.noise_pool=64 (make bench SET=...)")
    OVERRIDES.update(assignment.split("=", 1) for assignment in arguments.set)
    HELD_OUT.extend(held_out_sets(arguments.similarity) if arguments.similarity else [])
    if arguments.child == "drift":
        return child_drift(arguments.corpus, arguments.parent, arguments.child_output)
    if arguments.child == "gensim":
        return child_gensim(arguments.corpus, arguments.epochs, arguments.child_output, arguments.workers,
                            arguments.seed)
    if arguments.child == "score":
        return child_score(arguments.corpus, arguments.child_output)
    if arguments.child == "prepare":
        return child_prepare(arguments.corpus, arguments.fraction, arguments.lines, arguments.child_output)
    if arguments.child == "kernel":
        return child_kernel(arguments.corpus, arguments.shards, arguments.child_output)
    if arguments.child == "mllib":
        return child_mllib(arguments.corpus, arguments.epochs, arguments.shards, arguments.child_output)
    if not arguments.corpus.exists():
        sys.exit(f"bench: corpus {arguments.corpus} is absent; pass --corpus (make bench BENCH_CORPUS=...)")
    if arguments.lines < OWN_LINES:
        sys.exit(f"bench: LINES={arguments.lines} is negative; give words per line, or {OWN_LINES} for the corpus's "
                 "own lines")
    if arguments.lines != LINE_WORDS and arguments.mode not in LINES_MODES:
        sys.exit(f"bench: LINES applies to MODE={' and MODE='.join(LINES_MODES)}, not MODE={arguments.mode}")
    fraction = QUICK_FRACTION if arguments.quick else 1.0
    systems = arguments.systems.split(",")
    unknown = [system for system in systems if system not in SYSTEMS]
    if unknown:
        sys.exit(f"bench: unknown system {unknown[0]!r} in SYSTEMS; choose from {','.join(SYSTEMS)}")
    rows = []
    if arguments.mode == "memory":
        rows = run_memory(fraction, arguments.epochs, arguments.shards)
    elif arguments.mode == "profile":
        rows = run_profile(arguments.corpus, fraction, arguments.epochs, arguments.shards, arguments.lines)
    elif arguments.mode == "retrain":
        rows = run_retrain(fraction, arguments.corpus, arguments.epochs, arguments.shards)
    elif arguments.mode == "scaling":
        corpus, words = prepare_corpus(arguments.corpus, fraction)
        rows = [run_ours(corpus, words, arguments.epochs, shards, f"scaling-{shards}") for shards in SCALING_SHARDS]
    elif arguments.mode == "size":
        for size in SIZE_FRACTIONS:
            corpus, words = prepare_corpus(arguments.corpus, size * fraction)
            rows.append({**run_ours(corpus, words, arguments.epochs, arguments.shards, f"size-{size}"),
                         "fraction": size})
    else:
        if arguments.ours_seeds and "train.seed" in OVERRIDES:
            sys.exit("bench: give our seeds by OURS_SEEDS or by SET=train.seed=N, not both")
        ours_seeds = (arguments.ours_seeds or OVERRIDES.get("train.seed", "1")).split(",")
        corpus, words = prepare_corpus(arguments.corpus, fraction, arguments.lines)
        seeds = {"ours": ours_seeds, "gensim": arguments.gensim_seeds.split(",")}
        for system, seed in seeded_turns(systems, seeds):
            if system == "ours":
                rows.append({**scores_of_ours(run_ours(corpus, words, arguments.epochs, arguments.shards, "default",
                                                       extra={"train.seed": seed})), "seed": seed})
            else:
                rows.append(run_in_child(system, corpus, words, arguments.epochs, arguments.shards, seed))
        for row in rows:
            row["lines"] = "own" if arguments.lines == OWN_LINES else arguments.lines
    stamp = time.strftime("%Y%m%dT%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    host = machine()
    record = {"stamp": stamp, "mode": arguments.mode, "quick": arguments.quick, "machine": host, "rows": rows}
    (RESULTS / f"{stamp}-{arguments.mode}.json").write_text(json.dumps(record, indent=2))
    printers = {"memory": memory_markdown, "scaling": scaling_markdown, "retrain": retrain_markdown,
                "profile": profile_markdown}
    print(printers.get(arguments.mode, markdown)(rows))
    loops = ", ".join(f"{name} {target}" for name, target in host["numpy_float32_loops"].items())
    print(f"\nmachine: {host['cpu']}, {host['cores']} cores, widest SIMD {host['widest_simd']}; "
          f"numpy {host['numpy']} (float32 loops: {loops}), {host['blas']}")


if __name__ == "__main__":
    main()
