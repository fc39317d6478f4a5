# sgns-spark: `make run` runs the whole pipeline on the embedded corpus, `make test` the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

CONFIG ?= conf/default.toml
OUT ?= runs/demo
CORPUS ?=
ARGS ?=
DEMO_TOKENS ?= 2000000
DEMO_WORDS ?= paris,king,walked,three,queen
DEMO := $(OUT)/demo-corpus
# processes of make test (pytest-xdist); 0 runs the suite in make's own
TEST_WORKERS ?= 2

# The benchmark's options (BENCH_CORPUS, EPOCHS, SHARDS, SYSTEMS, MODE, LINES, GENSIM_SEEDS,
# OURS_SEEDS, SIMILARITY, QUICK, SET) are empty unless given: bench/run.py declares their defaults, once.
option = $(if $(2),--$(1) $(2))
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: setup run test lint bench bench-report package clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

ifeq ($(CORPUS),)
run: setup
	$(PY) -m sgns_spark.synthetic --out $(DEMO)/corpus.txt --questions $(DEMO)/questions.txt \
		--tokens $(DEMO_TOKENS)
	$(PY) jobs/pipeline.py --root $(OUT) --config $(CONFIG) --input $(DEMO)/corpus.txt \
		--set evaluate.analogy_path=$(DEMO)/questions.txt \
		--set evaluate.neighbour_words=$(DEMO_WORDS) $(ARGS)
else
run: setup
	$(PY) jobs/pipeline.py --root $(OUT) --config $(CONFIG) --input $(CORPUS) $(ARGS)
endif

test: setup
	$(PY) -m pytest --numprocesses $(TEST_WORKERS) $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check sgns_spark jobs tests bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	@touch $@

# Benchmarks never run in CI: make bench [EPOCHS=5] [SHARDS=16] [QUICK=1] [SYSTEMS=ours,gensim]
# [MODE=scaling|size|memory|retrain|profile] [LINES=12] [GENSIM_SEEDS=1,2,3] [OURS_SEEDS=1,2,3] [SIMILARITY=dir,file] [SET="train.key=value ..."]
bench: $(BENCH_STAMP)
	$(PY) bench/run.py $(call option,corpus,$(BENCH_CORPUS)) $(call option,epochs,$(EPOCHS)) \
		$(call option,shards,$(SHARDS)) $(call option,systems,$(SYSTEMS)) $(call option,mode,$(MODE)) \
		$(call option,lines,$(LINES)) $(call option,gensim-seeds,$(GENSIM_SEEDS)) \
		$(call option,ours-seeds,$(OURS_SEEDS)) $(call option,similarity,$(SIMILARITY)) $(if $(QUICK),--quick) $(foreach assignment,$(SET),--set $(assignment))

bench-report: $(BENCH_STAMP)
	$(PY) bench/report.py

# What a cluster needs: the library as a wheel, and a relocatable Python environment
# (venv-pack) with the runtime dependencies; pyspark itself comes from the cluster's Spark.
DIST ?= dist
PACK_ENV = $(DIST)/pack-env
package: setup
	rm -rf $(DIST)
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps -w $(DIST) .
	$(PYTHON) -m venv $(PACK_ENV)
	$(PACK_ENV)/bin/pip install --quiet --disable-pip-version-check --no-deps $(DIST)/sgns_spark-*.whl
	$(PACK_ENV)/bin/pip install --quiet --disable-pip-version-check 'numpy>=2.2,<3' 'pyarrow>=15' 'pandas>=2.2,<3'
	$(PY) -m pip install --quiet --disable-pip-version-check venv-pack
	$(VENV)/bin/venv-pack --quiet -p $(PACK_ENV) -o $(DIST)/sgns_spark_env.tar.gz
	rm -rf $(PACK_ENV)
	@echo "built $(DIST)/sgns_spark_env.tar.gz and $$(ls $(DIST)/*.whl)"

clean:
	rm -rf runs bench-results dist .pytest_cache
