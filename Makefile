# Entry points. `make demo` shows a tenant onboarding; `make test` runs every
# test, starting a local control plane unless KUBECONFIG names a cluster.
.PHONY: demo test unit e2e crds cluster-up cluster-down lint image image-check

demo:
	bash e2e/demo

test:
	bash e2e/test

# Every test that needs no server: each crate's unit tests, every test file
# outside e2e/ (snapshots, CRD drift, chart RBAC, CEL, Lua health checks,
# property tests), and the e2e crate's own pure tests.
unit:
	cargo test --workspace --exclude e2e
	cargo test -p e2e --lib --bins

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

crds:
	cargo run -q -p ics-operator -- crds > crds/carerecord.dev.yaml
	cp crds/carerecord.dev.yaml charts/ics-operator/crds/

cluster-up:
	bash e2e/cluster up

cluster-down:
	bash e2e/cluster down

# The operator image, built without a container daemon (static musl binary,
# crane, SBOM), under $(CARGO_TARGET_DIR)/image or target/image. See README,
# "Building and publishing the image".
image:
	bash image/build

# Builds it twice, pushes it to a throwaway local registry, and checks it (part of `make test`).
image-check:
	bash image/check
