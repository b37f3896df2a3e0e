# Data flow: search_spaces/*.yaml -> study (Optuna) -> trials (Keras) -> mlruns/ (MLflow) -> analysis -> reports/
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
GP_STAMP  := $(VENV)/.installed-gp
EXTRAS    ?=
SPACE     ?= search_spaces/cnn.yaml
TRIALS    ?= 40
TIMEOUT   ?= 1800
STUDY     ?=
STORAGE   ?=
TRACKING  ?=
SET       ?=
WORKERS   ?= 1
EXPERIMENT ?= fashion-cnn
HOST      ?= 127.0.0.1
PORT      ?= 5000
DASHBOARD_PORT ?= 8080
BACKEND   ?=
ARTIFACTS ?= $(CURDIR)/mlruns/artifacts
ALLOWED_HOSTS ?=
# pytest-xdist processes for `make test`: most tests wait on subprocesses, servers and
# signals, so two share the 2 cores well; tests that share a search or a server carry an
# xdist_group mark and run in one process (--dist loadgroup).
TEST_WORKERS ?= 2

REGIME    ?= balanced
# The regimes `make compare` reads, the first the reference of the others.
REGIMES   ?= balanced imbalance label_noise
DATA      ?= fashion_mnist
# One of the files Debian's dataset-fashion-mnist installs: present means the data is there.
FASHION_IDX := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# `make sweep`: the standard set of paired single-factor sweeps (docs/sweeps.md), PAIRS bases
# each, then the L2 dose-response on DOSE_PAIRS bases, then the decay control on PAIRS bases.
SWEEP_FACTORS ?= l2=0,1e-3 label_smoothing=0,0.1 batch_norm=false,true dropout=0,0.3 augment=false,true \
  data.label_noise=0,0.2
SWEEP_DOSE    ?= l2=0,1e-5,1e-4,1e-3,1e-2
# Last, at PAIRS bases, on Adam bases only: the L2 penalty (reference) against AdamW's decay of
# 2 x l2, and against neither: at these sizes that decay is tiny (docs/sweeps.md), so `none` says
# whether adamw differs from no shrinkage at all.
SWEEP_CONTROL ?= decay=l2,adamw,none
PAIRS         ?= 100
DOSE_PAIRS    ?= 40

comma := ,
search_flags = --space $(SPACE) --trials $(TRIALS) --timeout $(TIMEOUT) \
  $(if $(STUDY),--study-name $(STUDY)) $(if $(filter-out 1,$(WORKERS)),--workers $(WORKERS)) \
  $(foreach kv,$(SET),--set $(kv))
# A campaign's own default target (500) unless TRIALS is given on the make command line.
# `make campaign` and `make sweep` run two 1-thread worker processes unless WORKERS is given:
# a campaign's trials are i.i.d. and a sweep's arms are paired by seed, data order and initial
# weights, not by process. The count changes the speed, and the TF threads per trial with it
# (1 each for 2 workers, 2 for one process), which moves a trial's last bits: every trial
# logs its threads, and a sweep's analysis names pairs whose arms differ in them. On 2 cores
# two processes completed 18% and 45% more campaign trials per hour than one of 2 threads, on
# two machines (benchmarks/README.md, campaign throughput; a sweep trains at the same floors).
pool_workers = $(if $(filter command line environment,$(origin WORKERS)),$(WORKERS),2)
# Given but empty would silently mean one process; refused while make reads this file, so
# before any target (setup included) has run, for the targets that read WORKERS.
ifneq ($(filter campaign sweep search,$(MAKECMDGOALS)),)
ifneq ($(filter command line environment,$(origin WORKERS)),)
ifeq ($(strip $(WORKERS)),)
$(error WORKERS is empty: give the number of worker processes, e.g. WORKERS=2)
endif
endif
endif
campaign_flags = $(if $(filter command line,$(origin TRIALS)),--trials $(TRIALS)) \
  $(if $(filter command line,$(origin TIMEOUT)),--timeout $(TIMEOUT)) \
  $(if $(filter-out 1,$(pool_workers)),--workers $(pool_workers)) $(foreach kv,$(SET),--set $(kv))
# STORAGE, TRACKING and BACKEND may carry a password, in any characters (a quote too): they
# reach the programs through the environment, which make exports (see below), never through
# a command line (which the shell parses, make echoes and `ps` shows); only masked copies are
# printed, masked by study/secrets.py as the programs mask theirs.
# The exception is `dashboard`: optuna-dashboard takes the storage only as an argument (use
# PGPASSWORD or ~/.pgpass there rather than a password in the URL).
mask = $(PY) -m study.secrets
show_urls = $(if $(STORAGE)$(TRACKING),@printf 'storage %s  tracking %s\n' "$${STUDY_STORAGE:-default}" "$${MLFLOW_TRACKING_URI:-default}" | $(mask))
# `make server`: plain postgresql:// means psycopg 3 to SQLAlchemy 2.1; the venv has psycopg2.
server_backend = $(patsubst postgresql://%,postgresql+psycopg2://%,$(or $(BACKEND),sqlite:///$(CURDIR)/mlruns/mlflow.db))
tracking_uri = $(or $(TRACKING),$(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlruns/mlflow.db)
ifneq ($(STORAGE),)
search campaign sweep publish publish-sweep report dashboard: export STUDY_STORAGE := $(STORAGE)
endif
ifneq ($(TRACKING),)
search campaign sweep publish publish-sweep report: export MLFLOW_TRACKING_URI := $(TRACKING)
endif
ui: export MLFLOW_BACKEND_STORE_URI := $(tracking_uri)
server: export MLFLOW_BACKEND_STORE_URI := $(server_backend)
# `make ui`/`server`: MLflow's job runner (GenAI scorers, 7 huey consumers) is not used here and
# outlived a SIGTERM; MLFLOW_JOBS=1 starts it. The server runs in its own process group, and a
# TERM, INT or HUP to make (or to this shell) stops that whole group, so nothing is left behind.
MLFLOW_JOBS ?=
mlflow_jobs = MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$(if $(filter 1 true yes,$(MLFLOW_JOBS)),true,false)
run_as_group = set -m; $(1) & child=$$!; set +m; trap 'kill -TERM -- -$$child 2>/dev/null' TERM INT HUP; \
  status=0; while kill -0 $$child 2>/dev/null; do wait $$child; status=$$?; done; exit $$status
# HOST and PORT set in the environment (some shells export HOST) move the address: say so.
bind_note = $(strip $(foreach var,HOST PORT,$(if $(filter environment%,$(origin $(var))),$(var)=$($(var)) from the environment)))
show_bind = $(if $(bind_note),@echo 'binding $(HOST):$(PORT) ($(bind_note); set HOST=/PORT= on the make command line to choose)')

define banner
	@printf '\n\033[1m== %s ==\033[0m\n' "$(1)"
endef

.PHONY: help setup data search search-quick campaign sweep publish publish-sweep compare report ui dashboard server test test-fast bench clean clean-runs

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# UV=/path/to/uv installs the same pinned packages with uv instead of pip (.ci/run does: pip
# took minutes from a fresh clone). uv reads no pip.conf, so UV_FLAGS carries what pip would read
# there (e.g. --find-links for a local CPU build of torch); --compile-bytecode because pip
# compiles on install and every test's TensorFlow process would otherwise compile its imports.
UV        ?=
UV_FLAGS  ?=
pip_install = $(if $(UV),$(UV) pip install --quiet $(1) --python $(PY) --compile-bytecode $(UV_FLAGS),$(PY) -m pip install --quiet $(1))

$(STAMP): requirements.lock
	$(call banner,virtual environment + pinned packages)
	test -x $(PY) || python3 -m venv $(VENV)
	$(call pip_install,--upgrade pip)
	$(call pip_install,-r requirements.lock)
	touch $(STAMP)

# keras-tuner and tensorboard are benchmark-only extras, kept out of requirements.lock; the
# benchmark smoke tests need them, so `make test` installs them (`make bench` lets
# `python -m benchmarks` install them when it needs them).
$(BENCH_STAMP): $(STAMP) benchmarks/requirements.txt
	$(call banner,benchmark extras (keras-tuner, tensorboard))
	$(call pip_install,-r benchmarks/requirements.txt)
	touch $(BENCH_STAMP)

# PyTorch only serves `--sampler gp` (Optuna's GPSampler): an optional extra, kept out of
# requirements.lock. `make setup EXTRAS=gp` installs it; `make test` always does.
$(GP_STAMP): $(STAMP) requirements-gp.txt
	$(call banner,optional extra gp (PyTorch for --sampler gp))
	$(call pip_install,-r requirements-gp.txt)
	touch $(GP_STAMP)

setup: $(STAMP) $(if $(filter gp,$(EXTRAS)),$(GP_STAMP)) data ## Create the venv, install pinned packages (EXTRAS=gp: PyTorch too), get Fashion-MNIST

# The venv first where the Debian files are missing: the Keras fallback needs it (and so does
# setup). A prerequisite, not a recursive $$(MAKE) in the recipe, which even `make -n` would
# run (and with it apt-get), and which `make -j2 setup` would run beside setup's own venv build.
data: | $(if $(wildcard $(FASHION_IDX)),,$(STAMP))
data: ## Install Debian's dataset-fashion-mnist (or download it through Keras where apt is missing)
	$(call banner,Fashion-MNIST)
	@if [ -f $(FASHION_IDX) ]; then echo "present: /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; then :; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; then :; \
	else echo "no Debian package: downloading through Keras into ~/.keras/datasets"; \
	  $(PY) -c "import keras; keras.datasets.fashion_mnist.load_data()"; fi

search: setup ## Run the default study (SPACE, TRIALS, TIMEOUT, STUDY, STORAGE, TRACKING, SET="k=v ...", WORKERS)
	$(call banner,search $(SPACE): $(TRIALS) trials or $(TIMEOUT) s)
	$(show_urls)
	@echo '$(PY) -m study search $(search_flags)'
	@$(PY) -m study search $(search_flags)

search-quick: setup ## A few minutes: 6 trials, 3 epochs, on a 6000-image subset
	$(call banner,quick search)
	$(PY) -m study search --space $(SPACE) --trials 6 --study-name quick \
	  --set data.train_size=6000 --set data.val_size=2000 --set data.test_size=2000 --set train.epochs=3

campaign: setup ## One regime's pool of i.i.d. unpruned trials (REGIME=balanced|imbalance|label_noise, TRIALS=500, WORKERS=2, DATA=digits: smoke); resumes
	$(call banner,campaign $(REGIME) on $(DATA))
	$(show_urls)
	@$(PY) -m study campaign --regime $(REGIME) --data $(DATA) $(campaign_flags)

# One invocation per sweep size: the standard set at PAIRS bases, the dose-response at DOSE_PAIRS,
# then the decay control at PAIRS (after the dose-response, which issue 11's Guo claims need).
# digits.yaml fixes augment (digits are not flip- or rotation-invariant): its smoke run skips it.
sweep_factors = $(if $(filter digits,$(DATA)),$(filter-out augment=%,$(SWEEP_FACTORS)),$(SWEEP_FACTORS))
sweep_flags = --data $(DATA) $(if $(filter command line,$(origin TIMEOUT)),--timeout $(TIMEOUT)) \
  $(if $(filter-out 1,$(pool_workers)),--workers $(pool_workers)) $(foreach kv,$(SET),--set $(kv))
sweep: setup ## Paired single-factor sweeps: SWEEP_FACTORS at PAIRS=100 bases, the L2 dose-response at DOSE_PAIRS=40, the L2-vs-AdamW control at PAIRS (WORKERS=2, DATA=digits: smoke); resumes
	$(call banner,sweep $(sweep_factors) on $(DATA))
	$(show_urls)
	@$(PY) -m study sweep $(foreach f,$(sweep_factors),--factor $(f)) --pairs $(PAIRS) $(sweep_flags)
	@$(PY) -m study sweep --factor $(SWEEP_DOSE) --pairs $(DOSE_PAIRS) $(sweep_flags)
	@$(PY) -m study sweep --factor $(SWEEP_CONTROL) --pairs $(PAIRS) $(sweep_flags)

publish: setup ## A campaign's results/campaign-$(REGIME)/: its export, report and README.md (after `make campaign`)
	$(call banner,publish campaign-$(REGIME))
	$(show_urls)
	@$(PY) -m analysis publish --experiment campaign-$(REGIME)

publish-sweep: setup ## The sweeps' results/sweeps/: their export, the paired report and README.md (after `make sweep`; a running sweep's last pairs left out)
	$(call banner,publish sweep)
	$(show_urls)
	@$(PY) -m analysis publish --experiment sweep --out results/sweeps

compare: setup ## The published regimes side by side, each difference tested, into results/regimes/ (after `make publish`)
	$(call banner,compare $(REGIMES))
	@$(PY) -m analysis compare $(foreach r,$(REGIMES),--csv results/campaign-$(r)/epochs.csv.gz) --out results/regimes

report: $(STAMP) ## Analyse an experiment (EXPERIMENT=...) into reports/<experiment>/
	$(call banner,report on $(EXPERIMENT))
	$(show_urls)
	@$(PY) -m analysis report $(foreach e,$(EXPERIMENT),--experiment $(e))

ui: $(STAMP) ## MLflow UI on $(HOST):$(PORT) against the store (one worker; MLFLOW_JOBS=1 adds the job runner)
	$(call banner,MLflow UI on http://$(HOST):$(PORT)/#/experiments?workflowType=machine_learning)
	$(show_bind)
	mkdir -p mlruns
	@$(call run_as_group,$(mlflow_jobs) $(VENV)/bin/mlflow ui --host $(HOST) --port $(PORT) --workers 1)

dashboard: $(STAMP) ## optuna-dashboard on the study storage, on $(HOST):$(DASHBOARD_PORT)
	$(call banner,optuna-dashboard on http://$(HOST):$(DASHBOARD_PORT))
	@printf 'storage %s\n' "$${STUDY_STORAGE:-mlruns/optuna.journal}" | $(mask)
	@$(VENV)/bin/optuna-dashboard "$${STUDY_STORAGE:-mlruns/optuna.journal}" --host $(HOST) --port $(DASHBOARD_PORT)

server: $(STAMP) ## MLflow tracking server for many machines (BACKEND=sqlite|postgresql URL, ARTIFACTS=dir) on $(HOST):$(PORT)
	$(call banner,MLflow tracking server on http://$(HOST):$(PORT))
	$(show_bind)
	mkdir -p mlruns $(ARTIFACTS)
	@echo "backend $$(printf '%s' "$$MLFLOW_BACKEND_STORE_URI" | $(mask)), artifacts $(ARTIFACTS)"
	@$(call run_as_group,$(mlflow_jobs) $(VENV)/bin/mlflow server --artifacts-destination '$(ARTIFACTS)' \
	  --serve-artifacts --host $(HOST) --port $(PORT) $(if $(ALLOWED_HOSTS),--allowed-hosts '$(ALLOWED_HOSTS)'))

test: setup $(BENCH_STAMP) $(GP_STAMP) ## The full suite, what CI runs (~628 tests in TEST_WORKERS=2 processes: 17 min of pytest, about 18-26 min from a bare machine)
	$(call banner,tests)
	# --durations: the slowest tests are named in every run, where the time goes is never a guess
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=25

test-fast: setup $(BENCH_STAMP) $(GP_STAMP) ## The suite without tests marked slow
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

bench: setup ## Benchmarks: writes benchmarks/results/*.json and *.md (up to ~3 h; search_efficiency resumes)
	$(call banner,benchmarks)
	$(PY) -m benchmarks

clean: ## Remove build leftovers (caches); keeps runs, data and the venv
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
	rm -rf .pytest_cache

clean-runs: ## Delete mlruns/ (every MLflow run and Optuna study!)
	find mlruns -mindepth 1 -not -name .gitkeep -delete
