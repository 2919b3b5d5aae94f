#!/usr/bin/env bash
# Two udrbd nodes on 127.0.0.1 replicating one resource.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "demo: not yet: needs the engine and the daemon (issues 5 and 6)"
