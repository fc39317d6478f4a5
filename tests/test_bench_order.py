"""The benchmark's run order (bench/run.py): ours and gensim take turns, so the ratio of their
speeds is measured run by run, back to back, on a machine whose speed drifts; its record
names the host, whose speed differs from host to host; and the user's own similarity sets are
scored as measures of every system."""

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import run  # noqa: E402


def test_ours_and_gensim_take_turns_and_the_first_of_a_turn_alternates():
    turns = run.seeded_turns(["ours", "gensim", "mllib"], {"ours": ["1", "2", "3"], "gensim": ["4", "5", "6"]})
    assert turns == [("ours", 1), ("gensim", 4), ("gensim", 5), ("ours", 2), ("ours", 3), ("gensim", 6),
                     ("mllib", 1)]


def test_a_system_with_fewer_seeds_drops_out_of_the_later_turns():
    turns = run.seeded_turns(["gensim", "ours"], {"ours": ["1"], "gensim": ["1", "2", "3"]})
    assert turns == [("ours", 1), ("gensim", 1), ("gensim", 2), ("gensim", 3)]


def test_turn_ratios_pair_each_run_of_ours_with_the_gensim_run_of_its_turn():
    rows = [{"system": "ours", "words_per_s": 300.0}, {"system": "gensim", "words_per_s": 200.0},
            {"system": "gensim", "words_per_s": 400.0}, {"system": "ours", "words_per_s": 200.0},
            {"system": "mllib", "words_per_s": 50.0}]
    assert run.paired_ratios(rows) == [1.5, 0.5]


def test_the_record_names_the_hosts_cpu_and_its_widest_simd():
    if not run.CPU_INFO.exists():
        pytest.skip("no /proc/cpuinfo on this host (the CPU model comes from it)")
    text = run.CPU_INFO.read_text()
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.MULTILINE).group(1).split())
    host = run.machine()
    assert host["cpu"] == re.search(r"^model name\s*:(.*)$", text, re.MULTILINE).group(1).strip()
    assert host["cores"] == os.cpu_count()
    assert host["widest_simd"] == next((flag for flag in ("avx512f", "avx2") if flag in flags), "unknown")


def test_the_record_names_the_numpy_loops_the_kernel_ran_on():
    from numpy.lib.introspect import opt_func_info

    host = run.machine()
    assert host["numpy"] == np.__version__
    assert host["blas"].startswith(np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"])
    assert set(host["numpy_float32_loops"]) == set(run.KERNEL_UFUNCS)
    for name, target in host["numpy_float32_loops"].items():
        loops = opt_func_info(func_name=f"^{name}$", signature="float32")[name]
        available = " ".join(loop["available"] for loop in loops.values())
        assert target in available  # a target the build has for that loop, e.g. "X86_V3"


def test_held_out_similarity_sets_are_each_a_measure_named_by_their_file(tmp_path, monkeypatch):
    sets = tmp_path / "sets"
    sets.mkdir()
    (sets / "men.txt").write_text("sun sunlight 50\ncar automobile 49\n")
    (sets / "rw.tsv").write_text("# a comment\nsquishing\tsquirt\t5.88\n")
    (sets / ".hidden").write_text("not a set")
    extra = tmp_path / "verbs.csv"
    extra.write_text("run,walk,3\n")
    found = run.held_out_sets(f"{sets},{extra}")
    assert found == [sets / "men.txt", sets / "rw.tsv", extra]
    monkeypatch.setattr(run, "HELD_OUT", found)
    assert run.measures() == ("analogy", "ws353", "simlex", "men", "rw", "verbs")
    assert run.held_out_arguments() == ["--similarity", f"{sets / 'men.txt'},{sets / 'rw.tsv'},{extra}"]
    rows = [{"system": "ours", "seed": seed, "words_per_s": 1.0, "analogy": 0.2, "ws353": 0.5, "simlex": 0.3,
             "men": men, "rw": 0.2, "verbs": 0.1} for seed, men in ((1, 0.60), (2, 0.70))]
    rows.append({"system": "gensim", "seed": 1, "words_per_s": 1.0, "analogy": 0.1, "ws353": 0.5, "simlex": 0.3,
                 "men": 0.55, "rw": 0.3, "verbs": 0.1})
    table = run.markdown(rows)
    assert table.splitlines()[0].endswith("| simlex | men | rw | verbs |")
    assert "| ours mean | 1,2 |" in table and "men 0.100" in table  # the spread of ours over its seeds
    assert "men +0.100, rw -0.100, verbs +0.000" in table  # ours' mean against gensim


def test_a_held_out_set_that_is_absent_repeated_or_unreadable_stops_the_bench_with_one_line(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "men.txt").write_text("sun sunlight 50\n")
    (tmp_path / "ws353.txt").write_text("sun sunlight 50\n")
    (tmp_path / "bad.txt").write_text("sun sunlight 50\nsun moon fifty\n")
    for paths, message in [(f"{tmp_path}/absent.txt", "absent.txt is absent"),
                           (f"{tmp_path}/a,{tmp_path}/b", "both named 'men'"),
                           (f"{tmp_path}/ws353.txt", "both named 'ws353'"),
                           (f"{tmp_path}/bad.txt", "bad.txt line 2 is not two words and a score")]:
        with pytest.raises(SystemExit) as stopped:
            run.held_out_sets(paths)
        assert message in str(stopped.value) and str(stopped.value).endswith("(make bench SIMILARITY=...)")


RAW_BOOK = ("Call me Ishmael.  Some years ago--never mind how long\n"
            "\n"
            "\"Emma,\" said MR. Knightley, \"is Emma's own.\"\n"
            "Café CAFÉ café\n")
RAW_BOOK_TOKENS = [["call", "me", "ishmael", "some", "years", "ago", "never", "mind", "how", "long"],
                   ["emma", "said", "mr", "knightley", "is", "emma", "s", "own"],
                   ["café", "café", "café"]]


@pytest.mark.parametrize("piece", [7, 1 << 20])
def test_the_prepared_corpus_is_the_products_tokens_in_the_corpus_lines_or_in_lines_of_a_width(
        tmp_path, monkeypatch, piece):
    """gensim reads the prepared file split at spaces, and ours tokenizes it again: both must find
    the product's own tokens there (lowercased, split at punctuation, NFKC), line by line where
    the corpus's lines are kept, also where a line crosses a piece the corpus is read in."""
    source = tmp_path / "book.txt"
    source.write_text(RAW_BOOK, encoding="utf-8")
    monkeypatch.setattr(run, "READ_CHUNK", piece)
    tokens = [token for line in RAW_BOOK_TOKENS for token in line]

    def prepared(fraction: float, line_words: int) -> list[list[str]]:
        output = tmp_path / f"prepared-{fraction}-{line_words}.txt"
        run.child_prepare(source, fraction, line_words, output)
        lines = [line.split() for line in output.read_text(encoding="utf-8").splitlines()]
        assert int(output.with_suffix(".words").read_text()) == sum(map(len, lines))
        return lines

    assert prepared(1.0, run.OWN_LINES) == RAW_BOOK_TOKENS
    assert prepared(1.0, 4) == [tokens[start : start + 4] for start in range(0, len(tokens), 4)]
    assert prepared(0.6, run.OWN_LINES) == [RAW_BOOK_TOKENS[0], RAW_BOOK_TOKENS[1][:2]]  # 12 of the 21 tokens
    monkeypatch.setitem(run.OVERRIDES, "corpus.max_sentence_length", "10")
    assert prepared(1.0, run.OWN_LINES) == RAW_BOOK_TOKENS  # the first line is exactly 10 tokens
    monkeypatch.setitem(run.OVERRIDES, "corpus.lowercase", "false")
    assert prepared(1.0, run.OWN_LINES)[1][:4] == ["Emma", "said", "MR", "Knightley"]
