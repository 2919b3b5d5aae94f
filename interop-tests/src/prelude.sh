# Prepended to every lab script. Helpers:
#   check NAME CMD...   run CMD; print "VMLAB_CHECK NAME pass|fail" (several checks, one boot)
#   wait_for SECS CMD...  poll CMD every 0.1 s until it succeeds; fails after SECS
#   section NAME        mark the start of a part of the run in the log
set -u
VMLAB_FAILED=0
check() {
    local name=$1; shift
    if "$@"; then echo "VMLAB_CHECK $name pass"; else echo "VMLAB_CHECK $name fail"; VMLAB_FAILED=1; fi
}
wait_for() {
    local n=$(( $1 * 10 )); shift
    local i
    for i in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}
section() { echo "=== $* (uptime $(cut -d' ' -f1 /proc/uptime)s)"; }
# Ends the run with a failing status when any check failed.
trap 'rc=$?; [ "$VMLAB_FAILED" = 0 ] || rc=1; exit $rc' EXIT
