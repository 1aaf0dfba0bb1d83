#!/usr/bin/env bash
# One entry point for the two README set-up commands:
#   ./dev.sh demo   - the main job on the embedded default
#   ./dev.sh test   - the full test suite
# It builds its own virtualenv (.venv, or $ORB_VENV) on first use.
set -euo pipefail
cd "$(dirname "$0")"
venv="${ORB_VENV:-.venv}"
py="${PYTHON:-python3}"

setup() {
    local stamp="$venv/.orb-installed"
    if [ ! -x "$venv/bin/python" ]; then
        "$py" -m venv "$venv"
    fi
    # Reinstall only when the dependency list changed.
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
        # compat mode keeps twisted/plugins visible to twistd (see README).
        "$venv/bin/python" -m pip install -q -e '.[test]' \
            --config-settings editable_mode=compat
        touch "$stamp"
    fi
}

cmd="${1:-help}"
shift || true
case "$cmd" in
    setup)
        setup
        ;;
    demo)
        setup
        exec "$venv/bin/python" -m orb.demo "$@"
        ;;
    test)
        setup
        log="$(mktemp)"
        trap 'rm -f "$log"' EXIT
        status=0
        "$venv/bin/python" -m twisted.trial --temp-directory=_trial_temp \
            "${@:-tests}" 2>&1 | tee "$log" || status=$?
        # Trial's own summary is "PASSED (successes=N, skips=M)" or
        # "FAILED (failures=F, errors=E, successes=N)"; restate it in the
        # plain "N passed, N failed" form CI reads.
        summary="$(grep -E '^(PASSED|FAILED) \(' "$log" | tail -n 1 || true)"
        field() { sed -nE "s/.*[( ]$1=([0-9]+).*/\1/p" <<<"$summary"; }
        passed="$(field successes)"; failures="$(field failures)"; errors="$(field errors)"
        skips="$(field skips)"; unexpected="$(field unexpectedSuccesses)"
        failed=$(( ${failures:-0} + ${errors:-0} + ${unexpected:-0} ))
        echo "${passed:-0} passed, ${failed} failed, ${skips:-0} skipped"
        if [ -z "$summary" ] || [ "${passed:-0}" -eq 0 ]; then
            echo "no test summary found: treating as failure" >&2
            exit 1
        fi
        exit "$status"
        ;;
    *)
        echo "usage: ./dev.sh demo|test|setup" >&2
        exit 2
        ;;
esac
