"""Two tuner processes on one Optuna study in a real PostgreSQL server (started here with initdb and pg_ctl on
a free port, stopped at teardown): the trials are shared, not duplicated. Under CI=true a missing server is
a failure, not a skip (scripts/setup.sh installs PostgreSQL)."""
import glob
import os
import shutil
import socket
import subprocess
import sys

import optuna
import pytest

FAULTS = os.path.join(os.path.dirname(__file__), "tune_faults.py")


def _pg_bin(name):
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    return found


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        psycopg2 = None
    missing = [n for n, p in (("initdb", initdb), ("pg_ctl", pg_ctl), ("psycopg2", psycopg2 or None)) if not p]
    if missing:
        why = f"PostgreSQL test needs {', '.join(missing)} (scripts/setup.sh installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    import pathlib
    import tempfile
    root = pathlib.Path(tempfile.mkdtemp(prefix="tilekit-pg-"))  # not under pytest's root-only tmp tree
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    as_user = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()
    subprocess.run(as_user + [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run(as_user + [pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
                              f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_tuners_share_one_postgres_study(postgres_url, tmp_path):
    env = dict(os.environ, TILEKIT_CACHE_DIR=str(tmp_path / "cache"), TILEKIT_TEST_SLOW_S="1")
    cmd = [sys.executable, "-m", "tilekit.cli", "tune", "faults.scale", "--shapes", "100", "--backend", "reference",
           "--kernel-module", FAULTS, "--repeats", "2", "--trials", "6", "--sampler", "random",
           "--space", "BLOCK=16,32,64,128", "mode=ok,slow", "--storage", postgres_url, "--study", "shared"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=170)
        assert p.returncode == 0, out[-3000:]
    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    ran = [t for t in trials if t.user_attrs.get("ran")]
    assert len({t.user_attrs["tuner"] for t in ran}) == 2               # both tuners worked on the study
    complete = [repr(sorted(t.params.items())) for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == len(set(complete))                          # no config timed and kept twice
    assert len(ran) <= 6 + 2                                            # one budget, shared (+1 in flight each)
