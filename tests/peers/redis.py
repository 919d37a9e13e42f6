"""Real Redis for the tests: private ``redis-server`` processes on 127.0.0.1.

Fixtures:

* ``redis_url`` (session): ``redis://127.0.0.1:PORT/0`` of a private ephemeral server,
  started once for the run and stopped after it.
* ``redis_store`` (function): a :class:`RedisStore` on ``redis_url`` under a fresh random
  prefix, closed after the test.
* ``redis_server_factory`` (function): ``make() -> RedisServer``, each one a further
  private server (for tests that stop and restart it); all are stopped after the test.
* ``redis_sentinel`` (session): a :class:`SentinelDeployment` — a master, one replica and
  one sentinel (quorum 1), passwords on the data nodes and on the sentinel. Tests must not
  stop its processes (``redis_sentinel_factory`` is for that).
* ``redis_sentinel_factory`` (function): ``make(sentinels=3, quorum=2) ->
  SentinelDeployment``, a private deployment to fail over; stopped after the test.
* ``redis_cluster`` (session): a :class:`ClusterDeployment` — three masters, no replicas,
  slots assigned with ``redis-cli --cluster create``, a password on every node. Tests must
  not stop its nodes (``redis_cluster_factory`` makes private ones for that).

Every setting is on the command line (no ``/etc/redis``): bound to 127.0.0.1 only,
protected mode, no persistence (``--save ""``, ``--appendonly no``), its working dir and
log in a pytest temp dir. Sentinels (``redis-server FILE --sentinel``) need a config file
they may rewrite: it is written in their working dir. Readiness is polled, with a
deadline: a deployment is handed out only once the replica is in sync and every sentinel
knows the master, the replica and the other sentinels, or every cluster node reports
``cluster_state:ok``. A missing ``redis-server`` or ``redis-cli`` fails in CI and skips
elsewhere.
"""

from __future__ import annotations

import functools
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from federation.stores.redis import RedisStore, RedisTopology, SentinelTarget
from tests.peers.common import free_port, missing

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
# Sentinels discover each other through hello messages every 2 s; a cluster's nodes agree
# on the slots within a few gossip rounds.
DEPLOY_TIMEOUT = 30.0
POLL = 0.05  # seconds between two readiness probes
MASTER_NAME = "isthmus-test"
DATA_PASSWORD = "data-" + secrets.token_hex(8)
SENTINEL_PASSWORD = "sentinel-" + secrets.token_hex(8)


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        missing("redis-server", "install it with `apt-get install redis-server`")
        raise AssertionError("unreachable")  # missing() fails or skips
    return path


def redis_cli_binary() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        missing("redis-cli", "install it with `apt-get install redis-tools`")
        raise AssertionError("unreachable")  # missing() fails or skips
    return path


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis answers PING on 127.0.0.1:port (inline command, no client); a
    server that wants a password (NOAUTH) is answering too."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def wait_for(
    condition: Callable[[], bool],
    what: str,
    log: Callable[[], str] = lambda: "",
    within: float = DEPLOY_TIMEOUT,
) -> None:
    """Poll ``condition`` until true; RuntimeError naming ``what`` (and the server's
    ``log()`` then) after ``within`` s. Connection errors of a server still starting count
    as not yet."""
    deadline = time.monotonic() + within
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {within} s; log:\n{log()}")
        time.sleep(POLL)


def sync_client(port: int, password: str | None = None) -> redis.Redis:
    """A short-lived synchronous client for probing a test server (close it after)."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        decode_responses=True,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
    )


def ask(port: int, password: str | None, *command: Any) -> Any:
    """Run one command against 127.0.0.1:port and close the connection."""
    client = sync_client(port, password)
    try:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        client.close()


class RedisServer:
    """One private redis-server; :meth:`start` and :meth:`stop` may be repeated (same port).

    ``extra(port)`` gives further command-line settings (replication, cluster, password)."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        port: int | None = None,
        extra: Callable[[int], Sequence[str]] | None = None,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self._extra = extra
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def logfile(self) -> Path:
        return self.workdir / "redis.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.logfile),
            "--daemonize", "no",
            "--databases", "1",
            *(self._extra(self.port) if self._extra is not None else ()),
        ]  # fmt: skip

    def start(self) -> None:
        if self.running:
            return
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(self.port):
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {code}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within "
                    f"{START_TIMEOUT} s:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()  # SIGTERM: clean shutdown; nothing is saved (ephemeral)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"


ServerT = TypeVar("ServerT", bound=RedisServer)


def start_server(binary: str, workdir: Path, attempts: int = 3) -> RedisServer:
    """Start a server on a free port, retrying on another port if that one got taken."""
    return start_made(RedisServer, binary, workdir, attempts)


def start_made(
    make: Callable[[str, Path], ServerT], binary: str, workdir: Path, attempts: int = 3
) -> ServerT:
    """:func:`start_server` of ``make(binary, workdir)``: a RedisServer or a subclass."""
    for attempt in range(1, attempts + 1):
        server = make(binary, workdir)
        try:
            server.start()
        except RuntimeError:
            if attempt == attempts:
                raise
            continue
        return server
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = redis_server_binary()
    server = start_server(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url, prefix=f"test:{secrets.token_hex(8)}:")
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
def redis_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], RedisServer]]:
    binary = redis_server_binary()
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = start_server(binary, tmp_path_factory.mktemp("redis-private"))
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


# --- Sentinel --------------------------------------------------------------------------


class SentinelServer(RedisServer):
    """``redis-server FILE --sentinel`` watching one master; FILE is rewritten by it."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        master_port: int,
        quorum: int,
        data_password: str | None,
        sentinel_password: str | None,
    ) -> None:
        super().__init__(binary, workdir)
        self.master_port = master_port
        self.quorum = quorum
        self.data_password = data_password
        self.sentinel_password = sentinel_password

    def command(self) -> list[str]:
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            "daemonize no",
            f'dir "{self.workdir}"',
            f'logfile "{self.logfile}"',
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} {self.quorum}",
            # A second without an answer and the master is down: quick failovers in tests.
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.data_password is not None:
            lines.append(f"sentinel auth-pass {MASTER_NAME} {self.data_password}")
        if self.sentinel_password is not None:
            # Asked of clients, and used by this sentinel to talk to the others.
            lines.append(f"requirepass {self.sentinel_password}")
        config = self.workdir / f"sentinel-{self.port}.conf"
        config.write_text("\n".join(lines) + "\n")
        return [self.binary, str(config), "--sentinel"]


class SentinelDeployment:
    """A master, one replica and ``sentinels`` sentinels on 127.0.0.1 (see module doc)."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        sentinels: int = 1,
        quorum: int = 1,
        data_password: str | None = DATA_PASSWORD,
        sentinel_password: str | None = SENTINEL_PASSWORD,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.sentinel_count = sentinels
        self.quorum = quorum
        self.data_password = data_password
        self.sentinel_password = sentinel_password
        self.master: RedisServer | None = None
        self.replica: RedisServer | None = None
        self.sentinels: list[SentinelServer] = []

    @property
    def data_nodes(self) -> list[RedisServer]:
        return [node for node in (self.master, self.replica) if node is not None]

    def start(self) -> None:
        auth = self._data_args
        self.master = start_made(
            lambda b, w: RedisServer(b, w, extra=auth), self.binary, self.workdir / "master"
        )
        master_port = self.master.port

        def replica_args(port: int) -> list[str]:
            return [*auth(port), "--replicaof", "127.0.0.1", str(master_port)]

        self.replica = start_made(
            lambda b, w: RedisServer(b, w, extra=replica_args),
            self.binary,
            self.workdir / "replica",
        )

        def sentinel(binary: str, workdir: Path) -> SentinelServer:
            return SentinelServer(
                binary,
                workdir,
                master_port=master_port,
                quorum=self.quorum,
                data_password=self.data_password,
                sentinel_password=self.sentinel_password,
            )

        for i in range(self.sentinel_count):
            self.sentinels.append(start_made(sentinel, self.binary, self.workdir / f"sentinel-{i}"))
        self.wait_ready()

    def _data_args(self, port: int) -> list[str]:
        # Send the first full sync at once, not after the default 5 s of waiting.
        args = ["--repl-diskless-sync-delay", "0"]
        if self.data_password is not None:
            args += ["--requirepass", self.data_password, "--masterauth", self.data_password]
        return args

    def wait_ready(self) -> None:
        """The replica is in sync and every sentinel knows the master, a healthy replica
        and all the other sentinels (so that a failover can be voted)."""
        assert self.replica is not None
        replica = self.replica
        wait_for(
            lambda: (
                ask(replica.port, self.data_password, "INFO", "replication").get(
                    "master_link_status"
                )
                == "up"
            ),
            f"replica on port {replica.port} in sync",
            replica.log_tail,
        )
        for sentinel in self.sentinels:
            wait_for(
                functools.partial(self._sentinel_ready, sentinel),
                f"sentinel on port {sentinel.port} ready",
                sentinel.log_tail,
            )

    def _sentinel_ready(self, sentinel: SentinelServer) -> bool:
        client = sync_client(sentinel.port, self.sentinel_password)
        try:
            master: dict[str, Any] = client.sentinel_master(MASTER_NAME)  # type: ignore[assignment]
            replicas: list[dict[str, Any]] = client.sentinel_slaves(MASTER_NAME)
        finally:
            client.close()
        healthy = [r for r in replicas if not (r["is_sdown"] or r["is_odown"])]
        return (
            bool(master["is_master"])
            and not master["is_sdown"]
            and bool(healthy)
            and int(master["num-other-sentinels"]) == len(self.sentinels) - 1
        )

    def master_port(self) -> int:
        """The master's port as the sentinels now see it (ask the first live one)."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                address = ask(
                    sentinel.port,
                    self.sentinel_password,
                    "SENTINEL",
                    "GET-MASTER-ADDR-BY-NAME",
                    MASTER_NAME,
                )
            except (redis.RedisError, OSError):
                continue
            return int(address[1])
        raise RuntimeError("no sentinel answers")

    def server(self, port: int) -> RedisServer:
        for node in self.data_nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def topology(self, *, dead_first: bool = False) -> RedisTopology:
        """What the hub is given; ``dead_first`` lists a closed port before the sentinels
        (the client must move on to the next one)."""
        hosts = [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]
        if dead_first:
            hosts.insert(0, ("127.0.0.1", free_port()))
        return RedisTopology(
            sentinel=SentinelTarget(
                hosts=tuple(hosts),
                master_name=MASTER_NAME,
                password=self.data_password,
                sentinel_password=self.sentinel_password,
            )
        )

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data_nodes]:
            node.stop()


def start_sentinel_deployment(binary: str, workdir: Path, **options: Any) -> SentinelDeployment:
    deployment = SentinelDeployment(binary, workdir, **options)
    try:
        deployment.start()
    except BaseException:
        deployment.stop()
        raise
    return deployment


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    deployment = start_sentinel_deployment(
        redis_server_binary(), tmp_path_factory.mktemp("redis-sentinel")
    )
    try:
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
def redis_sentinel_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., SentinelDeployment]]:
    binary = redis_server_binary()
    deployments: list[SentinelDeployment] = []

    def make(sentinels: int = 3, quorum: int = 2) -> SentinelDeployment:
        deployment = start_sentinel_deployment(
            binary,
            tmp_path_factory.mktemp("redis-sentinel-private"),
            sentinels=sentinels,
            quorum=quorum,
        )
        deployments.append(deployment)
        return deployment

    try:
        yield make
    finally:
        for deployment in deployments:
            deployment.stop()


# --- Cluster ---------------------------------------------------------------------------


class ClusterDeployment:
    """``masters`` cluster nodes without replicas, slots spread by ``redis-cli``."""

    def __init__(
        self,
        binary: str,
        cli: str,
        workdir: Path,
        *,
        masters: int = 3,
        password: str | None = DATA_PASSWORD,
    ) -> None:
        self.binary = binary
        self.cli = cli
        self.workdir = workdir
        self.master_count = masters
        self.password = password
        self.nodes: list[RedisServer] = []
        # Each node's bus port (port + 10000 unless set): a free one, kept across restarts.
        self._bus_ports: dict[int, int] = {}

    def _node_args(self, port: int) -> list[str]:
        args = [
            "--cluster-enabled", "yes",
            # Written even without persistence: a restarted node rejoins with its slots.
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-port", str(self._bus_ports.setdefault(port, free_port())),
            "--cluster-node-timeout", "2000",
        ]  # fmt: skip
        if self.password is not None:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        return args

    def start(self) -> None:
        for i in range(self.master_count):
            self.nodes.append(
                start_made(
                    lambda b, w: RedisServer(b, w, extra=self._node_args),
                    self.binary,
                    self.workdir / f"node-{i}",
                )
            )
        env = {"PATH": "/usr/bin:/bin"}
        if self.password is not None:
            env["REDISCLI_AUTH"] = self.password
        created = subprocess.run(
            [
                self.cli, "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DEPLOY_TIMEOUT,
            check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({created.returncode}):\n"
                f"{created.stdout}\n{created.stderr}"
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        """Every node reports the cluster ok, every slot served, every node known."""
        for node in self.nodes:
            wait_for(
                functools.partial(self._node_ready, node),
                f"cluster node on port {node.port} ready",
                node.log_tail,
            )

    def _node_ready(self, node: RedisServer) -> bool:
        info = str(ask(node.port, self.password, "CLUSTER", "INFO"))
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return (
            fields.get("cluster_state") == "ok"
            and int(fields.get("cluster_slots_ok", 0)) == 16384
            and int(fields.get("cluster_known_nodes", 0)) == len(self.nodes)
        )

    @property
    def url(self) -> str:
        """The first node's URL (any node will do: the client learns the others)."""
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.nodes[0].port}/0"

    def topology(self) -> RedisTopology:
        return RedisTopology(url=self.url, cluster=True)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster_deployment(workdir: Path) -> ClusterDeployment:
    deployment = ClusterDeployment(redis_server_binary(), redis_cli_binary(), workdir)
    try:
        deployment.start()
    except BaseException:
        deployment.stop()
        raise
    return deployment


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    deployment = start_cluster_deployment(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
def redis_cluster_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], ClusterDeployment]]:
    deployments: list[ClusterDeployment] = []

    def make() -> ClusterDeployment:
        deployment = start_cluster_deployment(tmp_path_factory.mktemp("redis-cluster-private"))
        deployments.append(deployment)
        return deployment

    try:
        yield make
    finally:
        for deployment in deployments:
            deployment.stop()


# --- for the contract suites -----------------------------------------------------------

# The Redis topologies the contract suites run on: pytest params, integration-marked.
TOPOLOGIES = ("redis", "redis-sentinel", "redis-cluster")
TOPOLOGY_PARAMS = [pytest.param(kind, marks=pytest.mark.integration) for kind in TOPOLOGIES]


def topology_of(request: pytest.FixtureRequest, kind: str) -> RedisTopology:
    """The :class:`RedisTopology` of one of :data:`TOPOLOGIES`, its servers started (once
    a session) through their fixture."""
    if kind == "redis":
        return RedisTopology(url=request.getfixturevalue("redis_url"))
    if kind == "redis-sentinel":
        sentinel: SentinelDeployment = request.getfixturevalue("redis_sentinel")
        return sentinel.topology()
    if kind == "redis-cluster":
        cluster: ClusterDeployment = request.getfixturevalue("redis_cluster")
        return cluster.topology()
    raise ValueError(f"no Redis topology {kind!r}")


def registry_prefix(kind: str, name: str) -> str:
    """A registry key prefix for ``kind``: hash-tagged under a Cluster, as the hub does."""
    return f"{{{name}}}:" if kind == "redis-cluster" else f"{name}:"
