# Thin wrappers around CMake; see README.md.
#   make        build into build/
#   make test   install deps, build, run every test (plain, then ASan+UBSan, then fuzzers)
#   make demo   build and run the demo of the main job
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all build deps test test-plain test-asan test-fuzz demo demo-control-plane demo-router clean format check-src

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B build $(CMAKE_FLAGS) >/dev/null
	cmake --build build -j $(JOBS)

test: deps check-src test-plain test-asan test-fuzz
	@echo "make test: all suites passed"

test-plain:
	cmake -S . -B build $(CMAKE_FLAGS) >/dev/null
	cmake --build build -j $(JOBS)
	cd build && ctest --output-on-failure -j $(JOBS)

test-asan:
	cmake -S . -B build-asan -DMESHTLS_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

test-fuzz:
	CC=clang cmake -S . -B build-fuzz -DMESHTLS_FUZZ=ON -DMESHTLS_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	cmake --build build-fuzz -j $(JOBS)
	cd build-fuzz && ctest --output-on-failure -j $(JOBS) -L fuzz

check-src:
	@scripts/checksrc.sh

# the main job (the sidecar accepts a trusted service, refuses an untrusted one), then the
# control plane (issue 10: bootstrap with a token, a revocation in CRL, OCSP and the feed)
demo: build
	@scripts/demo.sh
	@scripts/demo-control-plane.sh

# the control plane (issue 10): bootstrap with a token, revocation in CRL, OCSP and feed
demo-control-plane: build
	@scripts/demo-control-plane.sh

# the router (issue 11): ssh by connect id through the mTLS bastion
demo-router: build
	@scripts/demo-router.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz
