# backout task runner. `just test` is the whole test suite and installs what it needs.

set shell := ["bash", "-euo", "pipefail", "-c"]

default: demo

# The embedded demo: simulated cluster and workload, a bad canary caught and rolled back.
demo *ARGS:
    cargo run --quiet -- demo {{ARGS}}

# Install test dependencies (Debian's prometheus, chromium for the web page test, kubectl check)
# when missing.
deps:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null \
        || ! command -v chromium >/dev/null; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus chromium
    fi
    # The notification tests deliver to a real Alertmanager (Debian's package installs it as
    # /usr/bin/prometheus-alertmanager).
    if ! command -v prometheus-alertmanager >/dev/null; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus-alertmanager
    fi
    command -v kubectl >/dev/null || echo "note: kubectl not found; the kubectl faithfulness tests will be skipped, and tests/deploy.rs (which renders deploy/ with kubectl kustomize) fails: install kubectl"

# The whole test suite (unit, property, simulator, kubectl and real-Prometheus end-to-end tests).
test: deps
    cargo test --all-targets
    cargo test --doc

# Formatting and lints, as CI enforces them; the second clippy is the daemon-only build (what the
# container image builds): no harness module, and the tests that need none still compile.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo clippy --no-default-features --all-targets -- -D warnings

# Benchmarks: engine throughput, action plan latency, decision quality.
bench:
    cargo bench

# Decision-quality table (docs/decision-quality.md): backout vs Flagger, Argo Rollouts, Kayenta.
quality *ARGS:
    cargo run --release --quiet --features quality --bin quality -- --runs 500 {{ARGS}}

# Fleet benchmark (issue 10): the release daemon, a real Prometheus and the simulator with N
# services; prints a markdown table. `just fleet --services 10000 --out fleet.md`
fleet *ARGS:
    cargo build --release --locked --bin backout
    cargo bench --bench fleet -- {{ARGS}}
