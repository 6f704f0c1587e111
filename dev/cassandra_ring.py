"""A Cassandra ring on this machine, for development and CI: no Docker, no tarball.

Cassandra 5.0 comes from Maven Central (``dev/cassandra/pom.xml``, jars cached
in ``~/.cache/rlrings/cassandra/<version>/lib``). Node *i* runs as its own JVM
on 127.0.0.*i* with the same ports and its own directories under the ring's
directory, as ccm lays a ring out; node 1 is the seed. The ring's directory
keeps each node's ``cassandra.yaml``, log and pid, so a later command (or
another process) can stop, kill or wipe what an earlier one started.

    python -m dev.cassandra_ring up [--nodes 3] [--dir .cassandra] [--heap 512M]
    python -m dev.cassandra_ring status|down|wipe [--dir .cassandra]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POM = ROOT / "dev" / "cassandra" / "pom.xml"
VERSION = "5.0.6"
CACHE = Path(os.environ.get("RLRINGS_CACHE", Path.home() / ".cache" / "rlrings")) / "cassandra" / VERSION
CQL_PORT = 9042
STORAGE_PORT = 7000

# Java 17 needs these to let Cassandra reach JDK internals (Cassandra's jvm17-server.options)
JVM17_MODULE_OPTIONS = [
    *(f"--add-exports={m}=ALL-UNNAMED" for m in (
        "java.base/jdk.internal.misc", "java.base/jdk.internal.ref", "java.base/sun.nio.ch",
        "java.management.rmi/com.sun.jmx.remote.internal.rmi", "java.rmi/sun.rmi.registry",
        "java.rmi/sun.rmi.server", "java.sql/java.sql", "java.base/java.lang.ref", "jdk.unsupported/sun.misc",
    )),
    *(f"--add-opens={m}=ALL-UNNAMED" for m in (
        "java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
        "java.base/jdk.internal.reflect", "java.base/jdk.internal.math", "java.base/jdk.internal.module",
        "java.base/jdk.internal.util.jar", "jdk.management/com.sun.management.internal", "java.base/sun.nio.ch",
        "java.base/java.io", "java.base/java.nio", "java.base/java.util.concurrent", "java.base/java.util",
        "java.base/java.util.concurrent.atomic", "java.base/java.lang", "java.base/java.math",
        "java.base/java.lang.reflect", "java.base/java.net",
    )),
]  # fmt: skip


class RingError(RuntimeError):
    """A node did not start or stop as asked; the message says which and where its log is."""


def fetch() -> Path:
    """The directory of Cassandra's jars, fetched with Maven once and cached."""
    lib = CACHE / "lib"
    if (CACHE / "complete").exists():
        return lib
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RingError("Cassandra's dev ring needs java (17) and mvn (apt-get install openjdk-17-jdk-headless maven)")
    lib.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={lib}"], check=True
    )
    (CACHE / "complete").touch()
    return lib


@dataclass
class Node:
    """One Cassandra node of the ring: its address, directories and process."""

    index: int  # 1-based: node 1 listens on 127.0.0.1
    ring_dir: Path

    @property
    def address(self) -> str:
        return f"127.0.0.{self.index}"

    @property
    def directory(self) -> Path:
        return self.ring_dir / f"node{self.index}"

    @property
    def log_path(self) -> Path:
        return self.directory / "system.log"

    @property
    def pid(self) -> int | None:
        try:
            pid = int((self.directory / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child that has exited
        except ChildProcessError:
            pass
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return None
        return None if state in ("Z", "X") else pid

    def configure(self, seeds: str) -> Path:
        for name in ("data", "commitlog", "saved_caches", "hints", "cdc_raw"):
            (self.directory / name).mkdir(parents=True, exist_ok=True)
        config = self.directory / "cassandra.yaml"
        config.write_text(
            "\n".join(
                [
                    "cluster_name: rlrings-dev",
                    "num_tokens: 16",
                    "allocate_tokens_for_local_replication_factor: 3",
                    "partitioner: org.apache.cassandra.dht.Murmur3Partitioner",
                    f"data_file_directories: [{self.directory / 'data'}]",
                    f"commitlog_directory: {self.directory / 'commitlog'}",
                    f"saved_caches_directory: {self.directory / 'saved_caches'}",
                    f"hints_directory: {self.directory / 'hints'}",
                    f"cdc_raw_directory: {self.directory / 'cdc_raw'}",
                    "commitlog_sync: periodic",
                    "commitlog_sync_period: 10000ms",
                    "seed_provider:",
                    "  - class_name: org.apache.cassandra.locator.SimpleSeedProvider",
                    f'    parameters: [{{seeds: "{seeds}"}}]',
                    f"listen_address: {self.address}",
                    f"rpc_address: {self.address}",
                    f"storage_port: {STORAGE_PORT}",
                    f"native_transport_port: {CQL_PORT}",
                    "start_native_transport: true",
                    "endpoint_snitch: SimpleSnitch",
                    "auto_bootstrap: false",  # a fresh ring has nothing to stream
                    # small heaps: memtables off the heap, fewer writer threads
                    "memtable_allocation_type: offheap_objects",
                    "memtable_heap_space: 64MiB",
                    "memtable_offheap_space: 256MiB",
                    "concurrent_writes: 8",
                    "hinted_handoff_enabled: true",
                    "max_hint_window: 3h",
                    "",
                ]
            )
        )
        return config

    def start(self, lib: Path, seeds: str, heap: str) -> None:
        if self.pid is not None:
            return
        config = self.configure(seeds)
        jamm = next(lib.glob("jamm-*.jar"))
        command = [
            "java", f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Xss512k",
            f"-javaagent:{jamm}", "-Djdk.attach.allowAttachSelf=true", *JVM17_MODULE_OPTIONS,
            f"-Dcassandra.config=file://{config}", f"-Dcassandra.storagedir={self.directory}",
            f"-Dcassandra.jmx.local.port={7199 + self.index - 1}", "-Dcassandra-foreground=yes",
            "-Dcassandra.ring_delay_ms=1000", "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.logdir=" + str(self.directory), "-cp", f"{lib}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (self.directory / "pid").write_text(str(process.pid))

    def answers_cql(self) -> bool:
        """True once the node's native transport accepts CQL connections."""
        try:
            with socket.create_connection((self.address, CQL_PORT), timeout=1):
                pass
        except OSError:
            return False
        return "Starting listening for CQL clients" in self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers_cql():
                return
            if self.pid is None:
                raise RingError(f"Cassandra node {self.index} exited while starting; see {self.log_path}")
            time.sleep(0.5)
        raise RingError(f"Cassandra node {self.index} did not answer CQL within {timeout:.0f}s; see {self.log_path}")

    def stop(self, kill: bool = False, timeout: float = 60.0) -> None:
        """SIGTERM (Cassandra drains and flushes) or SIGKILL; waits until the process is gone."""
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)


class Ring:
    """Nodes 1..n under one directory."""

    def __init__(self, directory: Path, nodes: int | None = None):
        self.directory = Path(directory).resolve()  # Cassandra wants absolute file:// URIs
        existing = sorted(int(p.name[4:]) for p in self.directory.glob("node*") if p.name[4:].isdigit())
        count = nodes or (max(existing) if existing else 1)
        self.nodes = [Node(i, self.directory) for i in range(1, count + 1)]

    @property
    def contact_points(self) -> list[str]:
        return [node.address for node in self.nodes]

    def up(self, heap: str = "512M", timeout: float = 120.0) -> Ring:
        """Starts every node that is not running, one at a time (joining nodes must not race)."""
        lib = fetch()
        seeds = f"{self.nodes[0].address}:{STORAGE_PORT}"
        for node in self.nodes:
            if node.pid is None:
                node.start(lib, seeds, heap)
            node.wait_ready(timeout)
        self.wait_joined(timeout)
        return self

    def wait_joined(self, timeout: float) -> None:
        """Waits until every node sees every other one up (gossip lags CQL by a moment)."""
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import WhiteListRoundRobinPolicy

        deadline = time.monotonic() + timeout
        for node in self.nodes:
            only = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([node.address]))
            cluster = Cluster([node.address], execution_profiles={EXEC_PROFILE_DEFAULT: only}, protocol_version=5)
            try:
                session = cluster.connect()
                while True:
                    peers = {row.peer for row in session.execute("SELECT peer FROM system.peers_v2")}
                    if peers >= {n.address for n in self.nodes if n is not node}:
                        break
                    if time.monotonic() > deadline:
                        raise RingError(f"node {node.index} sees peers {sorted(peers)}, not the whole ring")
                    time.sleep(0.5)
            finally:
                cluster.shutdown()

    def down(self, kill: bool = False) -> None:
        for node in self.nodes:
            node.stop(kill=kill)

    def wipe(self) -> None:
        self.down(kill=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def status(self) -> list[tuple[int, str, int | None, bool]]:
        return [(n.index, n.address, n.pid, n.pid is not None and n.answers_cql()) for n in self.nodes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["fetch", "up", "status", "down", "wipe"])
    parser.add_argument("--dir", default=".cassandra", help="the ring's directory (default .cassandra)")
    parser.add_argument("--nodes", type=int, default=None, help="nodes for up (default 1, or as many as the dir has)")
    parser.add_argument("--heap", default="512M", help="heap per node (default 512M)")
    args = parser.parse_args(argv)
    try:
        if args.action == "fetch":
            print(fetch())
            return 0
        ring = Ring(Path(args.dir), args.nodes)
        if args.action == "up":
            started = time.monotonic()
            ring.up(args.heap)
            print(f"cassandra ring up: {', '.join(ring.contact_points)} (CQL port {CQL_PORT}) "
                  f"in {time.monotonic() - started:.0f}s; logs in {ring.directory}/node*/system.log")  # fmt: skip
        elif args.action == "down":
            ring.down()
        elif args.action == "wipe":
            ring.wipe()
        for index, address, pid, ready in ring.status() if args.action in ("up", "status") else []:
            print(f"node {index} {address}: {'answers CQL' if ready else 'running' if pid else 'stopped'}")
    except RingError as error:
        print(f"cassandra ring: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
