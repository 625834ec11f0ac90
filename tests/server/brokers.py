"""Brokers for the tests that run Celery, on Redis and on RabbitMQ.

* The machine's shared brokers: Redis by a fixed database number per test module (runs that use them hold
  ``flock /tmp/ww-broker.lock``), RabbitMQ by a virtual host made for the test and deleted after it (its queues
  are its own, whoever else runs).
* Private broker processes on a free port (:class:`PrivateRedis`, :class:`PrivateRabbit`) for the tests that kill
  and restart a broker: the shared ones are never restarted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection

from tests.conftest import REDIS_URL, free_port

RABBIT_URL = os.environ.get("WARDWATCH_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672")
#: the broker kinds the distributed tests run on (``params=BROKERS`` on a fixture; ``-m "not rabbitmq"`` skips one)
BROKERS = [pytest.param("redis", marks=pytest.mark.redis), pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the script itself: the /usr/sbin wrapper runs it via su


def rabbitmqctl(*args: str) -> None:
    """``rabbitmqctl`` against the machine's node (as root here: the wrapper switches to the rabbitmq user)."""
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}"


@contextlib.contextmanager
def rabbit_vhost() -> Iterator[str]:
    """A virtual host of this test on the shared RabbitMQ (guest may use it); yields its broker URL."""
    name = f"ww_{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"{RABBIT_URL}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


@contextlib.contextmanager
def shared_broker(kind: str, *, redis_db: int) -> Iterator[str]:
    """The URL of a broker nobody else uses during the test: Redis database ``redis_db`` (emptied before and
    after) or a fresh RabbitMQ virtual host."""
    if kind == "rabbitmq":
        with rabbit_vhost() as url:
            yield url
        return
    url = f"{REDIS_URL}/{redis_db}"
    redis.Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
        redis.Redis.from_url(url).flushdb()


def broker_answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with Connection(url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
            connection.default_channel  # noqa: B018 - a channel is what proves the broker serves
        return True
    except Exception:  # noqa: BLE001 - not (yet) up
        return False


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not broker_answers(url):
        assert process.poll() is None, f"broker ended: {log.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"broker did not start: {log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.2)


class PrivateRedis:
    """A redis-server of the test's own on a free port. ``persistent``: every write is in the append-only file
    before Redis answers (appendfsync always), so a ``kill -9`` loses nothing; otherwise a restart starts empty
    (the messages are lost, as with a broker that keeps no data)."""

    def __init__(self, workdir: Path, *, persistent: bool) -> None:
        self.dir, self.port, self.persistent = workdir, free_port(), persistent
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, wait: bool = True) -> None:
        persistent = self.persistent
        if not persistent:
            for leftover in self.dir.glob("appendonly*"):  # no data survives
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if persistent else "no", "--appendfsync", "always"]
        self.process = subprocess.Popen(args, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        if wait:
            self.wait()

    def wait(self) -> None:
        assert self.process is not None
        wait_until_up(self.url, self.process, self.log)

    def kill(self) -> None:
        """``kill -9``: nothing is flushed, nobody is told."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


class PrivateRabbit:
    """A RabbitMQ node of the test's own: its own node name, AMQP and distribution ports on loopback, data and
    log directories and Erlang cookie, so it shares nothing with the machine's node but epmd (which only maps
    names to ports). Durable queues and persistent messages survive its ``kill -9`` (Celery's defaults)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.dist_port = free_port(), free_port()
        self.node = f"ww{uuid.uuid4().hex[:10]}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "rabbitmq.log"
        (workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "consumer_timeout = 3600000\n"  # an unacknowledged task may run this long (see README "Brokers")
        )
        (workdir / "enabled_plugins").write_text("[].\n")
        (workdir / "rabbitmq-env.conf").write_text("")  # not the machine's (it names the machine's node)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.dir),  # its own Erlang cookie
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def start(self, *, wait: bool = True) -> None:
        # its own process group: the script execs erl, which starts helpers (erl_child_setup, inet_gethost)
        self.process = subprocess.Popen([RABBITMQ_SERVER], env=self._env(), stdout=self.log.open("ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait()

    def wait(self) -> None:
        assert self.process is not None
        wait_until_up(self.url, self.process, self.log, timeout=180)

    def kill(self) -> None:
        """``kill -9`` of the node and its helper processes (its own process group)."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
