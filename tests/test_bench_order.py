"""The benchmark's run order (bench/run.py): ours and gensim take turns, so the ratio of their
speeds is measured run by run, back to back, on a machine whose speed drifts; and its record
names the host, whose speed differs from host to host."""

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
