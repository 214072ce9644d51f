#!/usr/bin/env bash
# The whole test suite: unit, integration (in-process proxy and origins on ephemeral loopback
# ports) and end-to-end (the built binary with curl and Python).
set -euo pipefail
cd "$(dirname "$0")/.."
# Build everything first: the end-to-end tests run .build/debug/proxima.
swift build --build-tests
swift test --skip-build "$@"
