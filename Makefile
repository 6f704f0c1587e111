# rlrings: the front door. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
ARGS ?=
pattern ?=
# Tools built or installed outside the clone, so fresh clones on this machine reuse them
TOOLS_DIR ?= $(HOME)/.cache/rlrings
TERRAFORM_VERSION := 1.5.7
HELM_VERSION := 3.19.0
PROMETHEUS_OPERATOR_VERSION := 0.85.0
# kube-apiserver reports the version it was built from (helm checks the chart's kubeVersion against it)
KUBE_VERSION := $(shell sed -n 's|^require k8s.io/kubernetes v||p' dev/apiserver/go.mod)
KUBE_VERSION_FLAGS := $(foreach pkg,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
  -X $(pkg).gitVersion=v$(KUBE_VERSION) -X $(pkg).gitMajor=1 -X $(pkg).gitMinor=$(word 2,$(subst ., ,$(KUBE_VERSION))) \
  -X $(pkg).gitTreeState=clean)
SERVICE_MONITOR_CRD := monitoring.coreos.com_servicemonitors.yaml
CHECKOV_VERSION := 3.3.30

.PHONY: help setup browser tools horovod cassandra-up cassandra-down cassandra-wipe run fewshot chaos load test test-fast lint format protos check-protos docs bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade uv
	$(BIN)/uv pip install --python $(BIN)/python -e '.[dev]'
	@# Bytecode now, once: services start several times faster where PYTHONDONTWRITEBYTECODE is set.
	@# (a few third-party files target other Python versions and do not compile; that is expected)
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP) ## Create .venv and install rlrings with PyTorch and the dev tools

browser: ## Install Debian's chromium for the viewer's browser tests, and Mesa's EGL for MuJoCo's headless rendering (needs root)
	@command -v chromium > /dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	@ldconfig -p | grep -q 'libEGL_mesa.so.0' || { apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri; }

tools: setup ## terraform, helm, promlint, kube-apiserver and etcd (built from the Go module proxy) and checkov (.venv-checkov) for the deployment checks
	@mkdir -p $(TOOLS_DIR)/bin
	@if ! command -v go > /dev/null; then echo "tools: go is not installed; terraform fmt and the helm CLI checks are skipped"; \
	else \
	  test -x $(TOOLS_DIR)/bin/terraform || GOBIN=$(TOOLS_DIR)/bin go install github.com/hashicorp/terraform@v$(TERRAFORM_VERSION); \
	  test -x $(TOOLS_DIR)/bin/helm || GOBIN=$(TOOLS_DIR)/bin go install -ldflags "\
	    -X helm.sh/helm/v3/internal/version.version=v$(HELM_VERSION) \
	    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=34 \
	    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=34" \
	    helm.sh/helm/v3/cmd/helm@v$(HELM_VERSION); \
	fi
	@# the Go client's code generators (clients/go: make protos, check-protos and its test)
	@if command -v go > /dev/null; then \
	  test -x $(TOOLS_DIR)/bin/protoc-gen-go || GOBIN=$(TOOLS_DIR)/bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12; \
	  test -x $(TOOLS_DIR)/bin/protoc-gen-go-grpc || GOBIN=$(TOOLS_DIR)/bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0; \
	fi
	@# a real API server for the chart's install test (dev/apiserver: kube-apiserver and etcd), with the
	@# Prometheus Operator's ServiceMonitor CRD from its Go module
	@if command -v go > /dev/null; then \
	  test -x $(TOOLS_DIR)/bin/etcd || (cd dev/apiserver && go build -o $(TOOLS_DIR)/bin/etcd go.etcd.io/etcd/server/v3); \
	  $(TOOLS_DIR)/bin/kube-apiserver --version 2>/dev/null | grep -qx 'Kubernetes v$(KUBE_VERSION)' || (cd dev/apiserver && go build -ldflags "$(KUBE_VERSION_FLAGS)" -o $(TOOLS_DIR)/bin/kube-apiserver \
	    k8s.io/kubernetes/cmd/kube-apiserver); \
	  test -f $(TOOLS_DIR)/crds/$(SERVICE_MONITOR_CRD) || { mkdir -p $(TOOLS_DIR)/crds && \
	    cp "$$(go mod download -json github.com/prometheus-operator/prometheus-operator@v$(PROMETHEUS_OPERATOR_VERSION) | \
	      $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')/example/prometheus-operator-crd/$(SERVICE_MONITOR_CRD)" \
	      $(TOOLS_DIR)/crds/ && chmod 644 $(TOOLS_DIR)/crds/$(SERVICE_MONITOR_CRD); }; \
	fi
	@# promlint: the rules of `promtool check metrics`, for the scrape-and-lint test (dev/promlint)
	@if command -v go > /dev/null; then test -x $(TOOLS_DIR)/bin/promlint || (cd dev/promlint && go build -o $(TOOLS_DIR)/bin/promlint .); fi
	@# checkov's bc-python-hcl2 shadows python-hcl2 (module hcl2): it lives in a venv of its own
	@test -x .venv-checkov/bin/checkov || { $(PYTHON) -m venv .venv-checkov && \
	  $(BIN)/uv pip install -q --python .venv-checkov/bin/python checkov==$(CHECKOV_VERSION); }

horovod: setup ## Build Horovod 0.28.1 for the installed PyTorch (cached in ~/.cache/rlrings/wheels) and install it
	@$(BIN)/python -c 'import horovod.torch' 2> /dev/null && echo "horovod: installed" || { \
	  wheel=$$(RLRINGS_CACHE=$(TOOLS_DIR) docker/build-horovod.sh $(BIN)/python) || { \
	    echo "horovod: the build failed (above). Learner rings still run with --ring torch;" \
	         "the Horovod tests of make test fail until it builds." >&2; exit 1; }; \
	  $(BIN)/uv pip install -q --python $(BIN)/python --no-deps "$$wheel" && \
	  $(BIN)/python -c 'import horovod.torch as hvd; print("horovod: installed, gloo", hvd.gloo_built(), "nccl", bool(hvd.nccl_built()))'; }

cassandra-up: setup ## Start a Cassandra ring on 127.0.0.1..N (NODES=3; jars from Maven Central, cached) in .cassandra/
	$(BIN)/python -m dev.cassandra_ring up --nodes $(or $(NODES),3)

cassandra-down: setup ## Stop the ring (SIGTERM: each node flushes); its data stays in .cassandra/
	$(BIN)/python -m dev.cassandra_ring down

cassandra-wipe: setup ## Kill the ring and delete .cassandra/
	$(BIN)/python -m dev.cassandra_ring wipe

run: setup ## Train on the local mesh (CartPole-v1 until solved); ARGS="--env crafter ..." passes settings
	$(BIN)/rlrings up $(ARGS)

fewshot: setup ## The few-shot baseline on cartpole (10 seeds, about 6 min on 2 cores); ARGS="--seeds 3 ..." passes settings
	$(BIN)/rlrings experiment fewshot $(ARGS)

test: setup browser tools horovod lint check-protos ## Lint, check generated code, run every test (pattern=NAME to filter)
	PATH="$(TOOLS_DIR)/bin:$$PATH" RLRINGS_REQUIRE_HOROVOD=1 $(BIN)/pytest $(if $(pattern),-k "$(pattern)")

test-fast: setup ## Unit tests only
	$(BIN)/pytest tests/unit $(if $(pattern),-k "$(pattern)")

lint: setup ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: setup ## Rewrite the README's algorithm table and the chart's values comments from the docstrings, and build the site into site/ (--strict)
	$(BIN)/python -m rlrings.ops.docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# the descriptor set keeps the comments: servers answer reflection with them (rlrings/rpc/reflection.py)
PROTOC_DESCRIPTORS = --include_imports --include_source_info --descriptor_set_out

protos: setup ## Generate rlrings/v1 from protos/rlrings/v1/*.proto
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --pyi_out=. \
	  $(PROTOC_DESCRIPTORS)=rlrings/v1/rlrings.binpb protos/rlrings/v1/*.proto
	@if test -x $(TOOLS_DIR)/bin/protoc-gen-go-grpc; then clients/go/generate.sh; \
	else echo "protos: the Go client's code is not regenerated (make tools installs the Go plugins)"; fi

check-protos: setup ## Fail when rlrings/v1 has drifted from protos/
	@tmp=$$(mktemp -d) && \
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=$$tmp --grpc_python_out=$$tmp --pyi_out=$$tmp \
	  $(PROTOC_DESCRIPTORS)=$$tmp/rlrings/v1/rlrings.binpb protos/rlrings/v1/*.proto && \
	if test -x $(TOOLS_DIR)/bin/protoc-gen-go-grpc; then clients/go/generate.sh $$tmp/go; fi && \
	if diff -r -x __init__.py -x __pycache__ $$tmp/rlrings/v1 rlrings/v1 && \
	   { ! test -d $$tmp/go || diff -r $$tmp/go/rlringsv1 clients/go/rlringsv1; }; then \
	  echo "protos: generated code is up to date"; rm -rf $$tmp; \
	else echo "protos: rlrings/v1 or clients/go/rlringsv1 differs from protos/; run 'make protos'"; rm -rf $$tmp; exit 1; fi

bench: setup horovod ## The model a run hands over (5 runs each of CartPole and Acrobot, pulled and played), replay vs Reverb, learning (IMPALA, DQN, PPO, APPO vs RLlib PPO over 5 seeds), mesh vs RLlib and a one-process ceiling, the learner ring, Cassandra vs embedded replay, SAC vs Stable-Baselines3 SAC (continuous), Atari frames/s vs Sample Factory APPO and the raw ceiling, central inference vs local and one actor vs its envs -> bench/results/*.json
	bench/reverb_env.sh
	bench/rllib_env.sh
	bench/sb3_env.sh
	bench/sf_env.sh
	$(BIN)/python -m bench.handoff
	$(BIN)/python -m bench.replay
	$(BIN)/python -m bench.learning
	$(BIN)/python -m bench.mesh
	$(BIN)/python -m bench.ring
	$(BIN)/python -m bench.replay_store
	$(BIN)/python -m bench.continuous
	$(BIN)/python -m bench.atari
	$(BIN)/python -m bench.inference

chaos: setup ## kill -9 each service of a training mesh (learner ring of 2) in turn; replay on a Cassandra ring under shard kills, a node down and back, a rolling restart -> bench/results/chaos.json, chaos.png, ring_faults.json
	$(BIN)/python -m bench.chaos $(ARGS)
	$(BIN)/python -m bench.ring_faults

load: setup ## 32 writers + 4 samplers + 200 idle streams on one replay, 64 watchers on parameter, chart defaults, 5 min each; 8 GIFs at once on the viewer -> bench/results/load.json, load.png
	$(BIN)/python -m bench.load $(ARGS)

clean: ## Remove run outputs and caches (keeps .venv)
	rm -rf runs data bench/results .pytest_cache .ruff_cache .hypothesis
