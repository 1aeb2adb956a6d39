"""A search across processes and machines, on Keras Tuner's chief/worker mode.

Keras Tuner already distributes a search: the *chief* serves the oracle over
gRPC, and each *worker* asks it for a trial, runs it and reports the score.
Every process learns its part from three environment variables:
``KERASTUNER_TUNER_ID`` (an id containing ``chief`` for the chief, a unique id
per worker), ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` (where the
chief listens and the workers connect).  This module adds no protocol of its
own.  It checks and sets those variables, bounds every wait, and checks that
the workers search exactly what the chief searches:

* the chief writes its search settings (model and data fingerprints, seed,
  steps, the searched dimensions) into the shared tuner directory before it
  serves trials; a worker refuses to start on different settings, or when it
  cannot see the file (its directory is not the chief's);
* each worker writes every trial's record into the trial's own folder there
  (:func:`gradadvisor.search.write_record`), which is how the chief, whose
  process runs no trial, gets the measurements it ranks and confirms;
* the chief stops waiting the moment every worker has been told the search is
  over (Keras Tuner's own loop checks only every 20 seconds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path

from ..errors import PYTHON, GradAdvisorError, Spelling, UsageError
from .. import _compat

ROLES = ("chief", "worker")
ENV_TUNER_ID = "KERASTUNER_TUNER_ID"
ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
ENV_NAMES = (ENV_TUNER_ID, ENV_ORACLE_IP, ENV_ORACLE_PORT)
#: Seconds a worker waits for the chief's oracle (and for each of its answers),
#: and the chief for its first worker.
DEFAULT_TIMEOUT = 600.0
SETTINGS_FILE = "gradadvisor_search.json"
SETTINGS_SCHEMA = "gradadvisor.search/1"
_SETTINGS_WAIT = 30.0


class OracleUnreachableError(GradAdvisorError, ConnectionError):
    """The chief's oracle cannot be reached, or no worker reached it, in time."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's part in a distributed search.

    Attributes:
        role: ``chief`` (serves the oracle, ranks and confirms) or ``worker``
            (runs trials).
        host, port: Where the chief listens and the workers connect.
        tuner_id: Keras Tuner's id of this process.
        timeout: Seconds to wait for the other side (see :data:`DEFAULT_TIMEOUT`).
    """

    role: str
    host: str
    port: int
    tuner_id: str
    timeout: float = DEFAULT_TIMEOUT

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def environment(self) -> dict:
        """The Keras Tuner environment variables for this process."""
        return {ENV_TUNER_ID: self.tuner_id, ENV_ORACLE_IP: self.host, ENV_ORACLE_PORT: str(self.port)}

    def to_dict(self) -> dict:
        return {"role": self.role, "oracle": self.address, "tuner_id": self.tuner_id}


def parse_address(text: str) -> tuple:
    """``(host, port)`` from ``HOST:PORT`` (``[v6]:PORT`` for IPv6).

    Raises:
        UsageError: not of that form, or the port is not 1-65535.
    """
    host, _, port = str(text).strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"The oracle address must be HOST:PORT with a port from 1 to 65535, for example "
                         f"10.0.0.5:8470. Got {text!r} instead.")
    return host, int(port)


def resolve_cluster(role, oracle_address=None, tuner_id=None, timeout=DEFAULT_TIMEOUT,
                    environ=None, spelling: Spelling = PYTHON) -> Cluster | None:
    """Check a distributed search's settings; None for a local search.

    The oracle address comes from ``oracle_address`` or else from the
    ``KERASTUNER_ORACLE_IP``/``KERASTUNER_ORACLE_PORT`` variables; the id from
    ``tuner_id``, else ``KERASTUNER_TUNER_ID``, else ``chief`` for the chief and
    ``worker-HOSTNAME-PID`` for a worker (unique, even for several workers on
    one machine).  Keras Tuner tells the chief from a worker by the word
    ``chief`` in the id, so a chief's id must contain it and a worker's not.

    Messages name the settings as ``spelling`` says (see :func:`check_distributed`).

    Raises:
        UsageError: an unknown role, no or a malformed address, a bad id or
            timeout, or an address or id given without a role.
    """
    environ = os.environ if environ is None else environ
    if role is None:
        _check_no_cluster_settings(oracle_address, tuner_id, spelling)
        return None
    if role not in ROLES:
        raise UsageError(f"The 'distributed' parameter must be 'chief', 'worker' or None. Got {role!r} instead.")
    if oracle_address is not None:
        host, port = parse_address(oracle_address)
    elif environ.get(ENV_ORACLE_IP) and environ.get(ENV_ORACLE_PORT):
        host, port = parse_address(f"{environ[ENV_ORACLE_IP]}:{environ[ENV_ORACLE_PORT]}")
    else:
        raise UsageError(f"A distributed {role} needs the oracle's address: pass "
                         f"{spelling('oracle_address', 'HOST:PORT')} or set {ENV_ORACLE_IP} and {ENV_ORACLE_PORT}.")
    tuner_id = tuner_id if tuner_id is not None else environ.get(ENV_TUNER_ID)
    if tuner_id is None:
        tuner_id = "chief" if role == "chief" else f"worker-{socket.gethostname()}-{os.getpid()}"
    tuner_id = str(tuner_id)
    if not tuner_id or any(c.isspace() for c in tuner_id):
        raise UsageError(f"The tuner id must be a non-empty word without spaces. Got {tuner_id!r} instead.")
    if role == "chief" and "chief" not in tuner_id:
        raise UsageError(f"The chief's tuner id must contain 'chief' (Keras Tuner tells the chief by it). Got "
                         f"{tuner_id!r} instead; drop {spelling('tuner_id')} or {ENV_TUNER_ID} for the chief.")
    if role == "worker" and "chief" in tuner_id:
        raise UsageError(f"A worker's tuner id must not contain 'chief' (Keras Tuner would take it for the "
                         f"chief). Got {tuner_id!r} instead; choose another with {spelling('tuner_id', 'ID')}.")
    if not isinstance(timeout, (int, float)) or not timeout > 0:
        raise UsageError(f"The oracle timeout must be a positive number of seconds. Got {timeout!r} instead.")
    return Cluster(role, host, port, tuner_id, float(timeout))


def check_distributed(role, oracle_address=None, tuner_id=None, timeout=DEFAULT_TIMEOUT, *, search=True,
                      tuner_dir=None, spelling: Spelling = PYTHON, environ=None, listen=True) -> Cluster | None:
    """The one check of the distributed settings, for the command line and the Python API.

    Runs before any TensorFlow work, so a mistake costs nothing: an address
    or id without a role, a role without a search or without a shared tuner
    directory, then everything :func:`resolve_cluster` checks, and, for a
    chief, that it can take its port.

    Args:
        role, oracle_address, tuner_id, timeout: As for :func:`resolve_cluster`.
        search: Whether a search was asked for; a role without one is a mistake.
        tuner_dir: The tuner directory, which every process must share.
        spelling: How the messages name the settings
            (:data:`gradadvisor.errors.COMMAND_LINE` or :data:`~gradadvisor.errors.PYTHON`).
        environ: The environment to read Keras Tuner's variables from.
        listen: Check that a chief can listen on its address.

    Returns:
        The :class:`Cluster`, or None for a search in this process.

    Raises:
        UsageError: the settings do not make a distributed search.
    """
    if role is None:
        _check_no_cluster_settings(oracle_address, tuner_id, spelling)
        return None
    if role not in ROLES:
        raise UsageError(f"The 'distributed' parameter must be 'chief', 'worker' or None. Got {role!r} instead.")
    if not search:
        raise UsageError(f"{spelling('distributed', role)} runs a search, but {spelling('search', False)} turns it "
                         "off. Drop one of them.")
    if not tuner_dir:
        raise UsageError(f"{spelling('distributed', role)} needs {spelling('tuner_dir', 'DIR')}, a folder shared by "
                         "the chief and every worker (for example on NFS).")
    cluster = resolve_cluster(role, oracle_address, tuner_id, timeout, environ, spelling)
    if listen and cluster.role == "chief":
        check_can_listen(cluster)
    return cluster


def _check_no_cluster_settings(oracle_address, tuner_id, spelling: Spelling) -> None:
    if oracle_address is not None or tuner_id is not None:
        given = spelling("oracle_address" if oracle_address is not None else "tuner_id")
        raise UsageError(f"{spelling.sentence(given)} only applies to a distributed search. Add "
                         f"{spelling('distributed', 'chief')} or {spelling('distributed', 'worker')}.")


def check_can_listen(cluster: Cluster) -> None:
    """Fail at once, not after the diagnosis, when the chief cannot take its port.

    Raises:
        UsageError: the address is not this machine's or the port is taken.
    """
    family = socket.AF_INET6 if ":" in cluster.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((cluster.host, cluster.port))
        except OSError as exc:
            raise UsageError(f"The chief cannot listen on {cluster.address} ({exc.strerror or exc}). Pass an "
                             "--oracle-address with this machine's address (0.0.0.0 for all of them) and a "
                             "free port.") from None


@contextlib.contextmanager
def tuner_environment(cluster: Cluster | None):
    """Set Keras Tuner's variables for ``cluster``, restoring them afterwards.

    For a local search (None) they are removed for the while, so that
    variables left in the environment cannot turn it into a stray worker.
    """
    saved = {name: os.environ.get(name) for name in ENV_NAMES}
    try:
        for name in ENV_NAMES:
            os.environ.pop(name, None)
        if cluster is not None:
            os.environ.update(cluster.environment())
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def wait_for_oracle(cluster: Cluster) -> None:
    """Block until the chief's oracle accepts connections, at most ``cluster.timeout`` s.

    Raises:
        OracleUnreachableError: it did not in time.
    """
    import grpc

    channel = grpc.insecure_channel(cluster.address)
    try:
        grpc.channel_ready_future(channel).result(timeout=cluster.timeout)
    except grpc.FutureTimeoutError:
        raise OracleUnreachableError(
            f"The worker could not reach the oracle at {cluster.address} within {cluster.timeout:g} s. Start "
            "the chief first ('gradadvisor diagnose ... --distributed chief'), check the address and that "
            "the port is open, or raise --oracle-timeout.") from None
    finally:
        channel.close()


# --------------------------------------------------------------------------
# The same search everywhere

def fingerprint(arrays) -> str:
    """A short hash of some arrays' shapes, dtypes and bytes."""
    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def write_settings(project_dir, settings: dict) -> None:
    """The chief's search settings, for the workers to check theirs against."""
    from ..files import write_text_atomic

    write_text_atomic(Path(project_dir) / SETTINGS_FILE,
                      json.dumps({"schema": SETTINGS_SCHEMA, "settings": settings}, indent=1, sort_keys=True))


def check_settings(project_dir, settings: dict, cluster: Cluster) -> None:
    """Refuse to work for a chief that searches something else.

    Raises:
        UsageError: the chief's settings file is missing from ``project_dir``
            (the directory is not shared) or differs from ``settings``.
    """
    path = Path(project_dir) / SETTINGS_FILE
    deadline = time.monotonic() + min(_SETTINGS_WAIT, cluster.timeout)
    # A shared file system may show the chief's file a moment late.
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    if not path.exists():
        raise UsageError(
            f"The worker cannot see the chief's search settings in '{path.parent.parent}': the chief at "
            f"{cluster.address} writes them into its --tuner-dir before serving trials, so this folder is not "
            "the chief's. Point the chief and every worker at one shared folder.")
    theirs = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
    ours = json.loads(json.dumps(settings))
    different = [key for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]
    if different:
        details = ", ".join(
            f"{key} ({ours.get(key)!r} here, {theirs.get(key)!r} on the chief)"
            if not isinstance(ours.get(key), (dict, list)) else key for key in different)
        raise UsageError(
            f"This worker's search differs from the chief's in {details}. Run the chief and every worker with "
            "the same MODEL, --data, --seed, --steps, --batch-size, --trial-steps, --tuner and rule options; "
            "only --distributed, --tuner-id and the output options may differ.")


# --------------------------------------------------------------------------
# Running the chief and the workers

def serve(run_search, oracle, cluster: Cluster, progress=None) -> None:
    """Run the chief's ``run_search`` (Keras Tuner's oracle service) to the end.

    Keras Tuner's chief blocks in ``search()`` and checks every 20 seconds
    whether every worker has been told to stop.  Here ``search()`` runs in a
    background thread and this thread watches the oracle with Keras Tuner's
    own test, returning as soon as it holds; the service keeps answering late
    workers (with "stop") until the process ends.

    Raises:
        OracleUnreachableError: no worker asked for a trial within the timeout.
        UsageError: the chief could not serve on its address.
        KeyboardInterrupt: on Ctrl-C; the trials finished so far are on disk.
    """
    failure: list = []

    def target():
        try:
            run_search()
        except BaseException as exc:  # re-raised in the calling thread
            failure.append(exc)

    if progress:
        progress("search", 0, oracle.max_trials or 0, f"oracle serving on {cluster.address}, waiting for workers")
    thread = threading.Thread(target=target, name="gradadvisor-oracle", daemon=True)
    thread.start()
    started = time.monotonic()
    while thread.is_alive():
        if getattr(oracle, "stop_seen", False) and _compat.chief_may_exit(oracle):
            break
        if not oracle.trials and not oracle.tuner_ids and time.monotonic() - started > cluster.timeout:
            raise OracleUnreachableError(
                f"No worker asked the oracle at {cluster.address} for a trial within {cluster.timeout:g} s. "
                "Start the workers with the same command and '--distributed worker --oracle-address "
                f"{cluster.address}', or raise --oracle-timeout.")
        thread.join(0.2)
    if failure:
        exc = failure[0]
        if isinstance(exc, RuntimeError) and "bind" in str(exc).lower():
            raise UsageError(f"The chief cannot listen on {cluster.address}: the port is taken or the address "
                             "is not this machine's. Pass another --oracle-address.") from None
        raise exc


def work(run_search, cluster: Cluster) -> None:
    """Run a worker's ``run_search`` with every call to the oracle bounded in time.

    Raises:
        OracleUnreachableError: the chief stopped answering.
    """
    import grpc
    # Keras Tuner waits up to an hour for each answer; a worker whose chief is
    # gone should say so sooner.
    try:
        with _compat.oracle_call_timeout(cluster.timeout):
            run_search()
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else type(exc).__name__
        raise OracleUnreachableError(
            f"The worker {cluster.tuner_id} lost the oracle at {cluster.address} ({code}): the chief has "
            "stopped or cannot be reached. Check the chief's output.") from None
