"""scripts/test-setup, the set-up step of `make test`: installs the missing Debian packages as root,
says in one line what to run otherwise, starts the machine's servers when they do not answer.

The decision logic runs against fake dpkg-query, apt-get, id and server tools in a temp dir put
first on PATH (nothing is installed, uninstalled, started or stopped); one test runs the script for
real on this machine, where everything is in place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "scripts" / "test-setup"
PACKAGES = [line.split("#")[0].split()[0] for line in (ROOT / "scripts" / "test-packages.txt").read_text().splitlines()
            if line.split("#")[0].strip()]

# Each fake records its call in $FAKE/calls; state lives in files under $FAKE.
FAKES = {
    "dpkg-query": '''
for p in "$@"; do
  case "$p" in -*) continue;; esac
  if grep -qxF "$p" "$FAKE/installed" 2>/dev/null; then echo "$p ii "; else missing=1; fi
done
exit ${missing:-0}''',
    "apt-get": '''
echo "apt-get $*" >> "$FAKE/calls"
[ "$1" = install ] && for p in "$@"; do case "$p" in -*|install) ;; *) echo "$p" >> "$FAKE/installed";; esac; done
exit 0''',
    "id": 'echo "${FAKE_UID:-0}"',
    "pg_isready": '[ -e "$FAKE/pg-up" ]',
    "mariadb-admin": '[ -e "$FAKE/mariadb-up" ]',
    "pg_ctlcluster": 'echo "pg_ctlcluster $*" >> "$FAKE/calls"; touch "$FAKE/pg-up"',
    "start-stop-daemon": 'echo "start-stop-daemon $*" >> "$FAKE/calls"; touch "$FAKE/mariadb-up"',
    "sudo": 'echo "sudo must not be called" >> "$FAKE/calls"; exit 99',
}


# The ordinary tools the script uses, linked into a directory of their own so that PATH holds
# nothing else (no real apt-get, sudo or server tools can be reached).
TOOLS = ("bash", "env", "sed", "awk", "grep", "ls", "sort", "tail", "sleep", "cat", "touch", "dirname")


@pytest.fixture
def machine(tmp_path):
    """A fake machine: every package installed and both servers up, until a test changes that."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    for name, body in FAKES.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    (tmp_path / "installed").write_text("".join(f"{p}\n" for p in PACKAGES))
    (tmp_path / "pg-up").touch()
    (tmp_path / "mariadb-up").touch()
    return tmp_path


def run(machine: Path, uid: int = 0) -> subprocess.CompletedProcess:
    env = {"PATH": str(machine / "bin"), "FAKE": str(machine), "FAKE_UID": str(uid),
           "HOME": str(machine)}
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def calls(machine: Path) -> list[str]:
    path = machine / "calls"
    return path.read_text().splitlines() if path.exists() else []


def uninstall(machine: Path, *packages: str) -> None:
    kept = [p for p in (machine / "installed").read_text().split() if p not in packages]
    (machine / "installed").write_text("".join(f"{p}\n" for p in kept))


def test_the_package_list_is_the_one_the_tests_need():
    assert {"postgresql-15-hypopg", "postgresql-15-partman", "unixodbc", "tdsodbc"} <= set(PACKAGES)


def test_everything_in_place_does_nothing_and_says_nothing(machine):
    r = run(machine)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert calls(machine) == []


def test_as_root_installs_only_the_missing_packages_once(machine):
    uninstall(machine, "postgresql-15-hypopg", "tdsodbc")
    r = run(machine)
    assert r.returncode == 0, r.stderr
    assert calls(machine) == ["apt-get update -qq", "apt-get install -y -qq postgresql-15-hypopg tdsodbc"]
    assert r.stderr == "test-setup: installing postgresql-15-hypopg tdsodbc\n"
    again = run(machine)  # idempotent: the second run finds them installed
    assert (again.returncode, again.stderr) == (0, "")
    assert len(calls(machine)) == 2


def test_not_root_prints_one_line_with_the_command_and_fails(machine):
    uninstall(machine, "unixodbc", "postgresql-15-partman")
    (machine / "bin" / "sudo").unlink()  # no sudo on the machine: the line says to run it as root
    r = run(machine, uid=1000)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and r.stdout == ""
    assert lines[0] == ("test-setup: missing Debian packages postgresql-15-partman unixodbc; run as root: "
                        "apt-get update && apt-get install -y postgresql-15-partman unixodbc")
    assert calls(machine) == []


def test_not_root_with_sudo_names_the_sudo_command(machine):
    uninstall(machine, "tdsodbc")
    r = run(machine, uid=1000)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "test-setup: missing Debian packages tdsodbc; run: sudo apt-get update && sudo apt-get install -y tdsodbc"]
    assert calls(machine) == []  # sudo is named, never called


def test_as_root_starts_servers_that_do_not_answer(machine):
    (machine / "pg-up").unlink()
    (machine / "mariadb-up").unlink()
    r = run(machine)
    assert r.returncode == 0, r.stderr
    started = calls(machine)
    assert len(started) == 2
    assert started[0].startswith("pg_ctlcluster --skip-systemctl-redirect ") and started[0].endswith(" main start")
    assert started[1] == "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
    assert run(machine).stderr == "" and len(calls(machine)) == 2


def test_not_root_with_a_server_down_says_how_to_start_it(machine):
    (machine / "mariadb-up").unlink()
    r = run(machine, uid=1000)
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["test-setup: MariaDB on 127.0.0.1:3306 is not answering; run: sudo "
                                     "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"]
    assert calls(machine) == []


def test_on_this_machine_it_finds_everything_in_place_within_a_second():
    t0 = time.monotonic()
    r = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=120, env=os.environ)
    elapsed = time.monotonic() - t0
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert elapsed < 1.0


def test_make_test_on_a_machine_without_the_packages_stops_before_pytest_with_the_line(machine):
    uninstall(machine, *PACKAGES)
    env = {**os.environ, "PATH": f"{machine / 'bin'}:{os.environ['PATH']}", "FAKE": str(machine), "FAKE_UID": "1000"}
    r = subprocess.run(["make", "--no-print-directory", "test"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert f"test-setup: missing Debian packages {' '.join(PACKAGES)}; run" in r.stderr
    assert "pytest" not in r.stdout + r.stderr and calls(machine) == []
