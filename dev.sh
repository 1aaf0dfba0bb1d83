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
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ dev.sh -nt "$stamp" ]; then
        "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
        # compat mode keeps twisted/plugins visible to twistd (see README).
        # bench: matplotlib, for bench/invoke.py's plot (tests/test_bench_invoke.py runs it).
        "$venv/bin/python" -m pip install -q -e '.[test,bench]' \
            --config-settings editable_mode=compat
        touch "$stamp"
    fi
}

# The pinned solc and Anvil (contracts/package.json + package-lock.json), for
# the tests: the one that recompiles the committed contract artifacts and the
# one against a real node. The demo needs neither (the artifacts are committed,
# the embedded chain is Python), so it does not need Node.js. npm ci again only
# when node_modules is missing or the lock changed.
setup_node() {
    local nstamp=contracts/node_modules/.orb-installed
    if ! command -v npm >/dev/null 2>&1; then
        echo "dev.sh: the tests need Node.js and npm (the pinned solc and Anvil): apt-get install nodejs npm" >&2
        exit 1
    fi
    if [ ! -f "$nstamp" ] || [ contracts/package-lock.json -nt "$nstamp" ]; then
        npm ci --prefix contracts --no-audit --no-fund --loglevel=error >/dev/null
        touch "$nstamp"
    fi
}

UNPRIV_UID=65534
UNPRIV_TESTS=(tests.hostile tests.test_exec_jail)

# A python the unprivileged user can run with this venv's packages: the venv
# itself when it can, else a tiny venv on the system python of the same
# version whose .pth points at this venv's site-packages (pyenv lives in
# /root, which uid 65534 cannot enter).
runs_unprivileged() {
    (cd / && setpriv --reuid=$UNPRIV_UID --regid=$UNPRIV_UID --clear-groups env -i \
        "$1" -I -c 'import twisted, pyseccomp, orb' 2>/dev/null)
}

unpriv_python() {
    local py ver site dir cand
    py="$(realpath -s "$venv")/bin/python"
    if runs_unprivileged "$py"; then
        echo "$py"; return 0
    fi
    ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    dir="$(realpath "$venv")-unpriv"
    for cand in "/usr/bin/python$ver" "/usr/local/bin/python$ver"; do
        [ -x "$cand" ] || continue
        if [ ! -x "$dir/bin/python" ]; then
            "$cand" -m venv --without-pip "$dir" >/dev/null || continue
        fi
        # addsitedir (not a bare path) so the venv's own .pth files, the
        # editable install among them, are read too.
        echo "import site; site.addsitedir('$(realpath "$site")')" \
            > "$dir/lib/python$ver/site-packages/orb-main-venv.pth"
        if runs_unprivileged "$dir/bin/python"; then
            echo "$dir/bin/python"; return 0
        fi
    done
    return 1
}

unpriv_tests() {
    local out="$1" py tmp rc=0
    if ! py="$(unpriv_python)"; then
        echo "SKIP unprivileged jail run: no python that uid $UNPRIV_UID can run"
        return 0
    fi
    tmp="$(mktemp -d /tmp/orb-unpriv-XXXXXX)"
    chown "$UNPRIV_UID:$UNPRIV_UID" "$tmp"
    echo "== the jail's tests again as uid $UNPRIV_UID (user namespace, no uid pool) =="
    (cd "$tmp" && setpriv --reuid=$UNPRIV_UID --regid=$UNPRIV_UID --clear-groups \
        env -i PATH=/usr/bin:/bin HOME="$tmp" "$py" -m twisted.trial \
        --temp-directory="$tmp/_trial_temp" "${UNPRIV_TESTS[@]}") 2>&1 | tee "$out" || rc=$?
    rm -rf "$tmp"
    return $rc
}

cmd="${1:-help}"
shift || true
case "$cmd" in
    setup)
        setup
        setup_node
        ;;
    demo)
        setup
        exec "$venv/bin/python" -m orb.demo "$@"
        ;;
    test)
        setup
        setup_node
        log="$(mktemp)"
        ulog="$(mktemp)"
        trap 'rm -f "$log" "$ulog"' EXIT
        status=0
        "$venv/bin/python" -m twisted.trial --temp-directory=_trial_temp \
            "${@:-tests}" 2>&1 | tee "$log" || status=$?
        # The jail's real-kernel tests once more as an unprivileged user, the
        # way a peer on a personal machine runs (user namespace instead of the
        # uid pool).  Only for the whole suite, or with ORB_TEST_UNPRIV=1.
        if [ "$(id -u)" = 0 ] && { [ $# -eq 0 ] || [ "${ORB_TEST_UNPRIV:-0}" = 1 ]; }; then
            if command -v setpriv >/dev/null; then
                unpriv_tests "$ulog" || status=$?
            else
                echo "SKIP unprivileged jail run: setpriv is not installed"
            fi
        fi
        # Trial's own summary is "PASSED (successes=N, skips=M)" or
        # "FAILED (failures=F, errors=E, successes=N)"; restate it in the
        # plain "N passed, N failed" form CI reads, both runs added up.
        total_p=0; total_f=0; total_s=0; found=0
        for f in "$log" "$ulog"; do
            summary="$(grep -E '^(PASSED|FAILED) \(' "$f" | tail -n 1 || true)"
            [ -n "$summary" ] || continue
            found=1
            field() { sed -nE "s/.*[( ]$1=([0-9]+).*/\1/p" <<<"$summary"; }
            passed="$(field successes)"; failures="$(field failures)"; errors="$(field errors)"
            skips="$(field skips)"; unexpected="$(field unexpectedSuccesses)"
            total_p=$(( total_p + ${passed:-0} ))
            total_f=$(( total_f + ${failures:-0} + ${errors:-0} + ${unexpected:-0} ))
            total_s=$(( total_s + ${skips:-0} ))
        done
        echo "${total_p} passed, ${total_f} failed, ${total_s} skipped"
        if [ "$found" = 0 ] || [ "$total_p" -eq 0 ]; then
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
