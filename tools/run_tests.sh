#!/usr/bin/env bash
# Run the bhcl test suite (installs whatever is still missing first).
#   bash tools/run_tests.sh [pytest args...]     e.g. -m "not slow" for the fast tier,
#                                                -n 0 for one process instead of one per core
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/install.sh || exit 1
PY=${PYTHON:-python3}
[ -n "${VIRTUAL_ENV:-}" ] && PY="$VIRTUAL_ENV/bin/python"
"$PY" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run_tests: pytest collected no tests; treating that as a failure" >&2
    exit 1
fi
exit "$rc"
