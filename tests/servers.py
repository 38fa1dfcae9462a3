"""Real servers for the tests, on 127.0.0.1 with free ports, each stopped by its PID.

- `Registry`: CNCF Distribution (`docker-registry`), plain HTTP, TLS (trustme CA), htpasswd, or token auth.
- `HelmRepo`: nginx serving a directory as a classic Helm repository, taking PUT (optionally behind basic auth).
- `DockerEngine`: dockerd with the vfs driver and no networking, for `docker load`.
- `helm_binary()`: the real helm, installed by scripts/test-prereqs.sh into .tools/bin.

See shared/docs/test-infra.md for why each is set up the way it is.
"""

from __future__ import annotations

import os

import shutil
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"

def system_binary(name: str) -> str:
    """A server binary from Debian's packages: on PATH, or in the sbin directories a user's PATH leaves out."""
    found = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError(f"{name} is not installed: run scripts/test-prereqs.sh")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s: {log.read_text()[-2000:]}")

class Server:
    """A process we started; `stop()` ends it by its PID (and is safe to call twice)."""

    proc: subprocess.Popen | None = None

    def _spawn(self, argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        handle = log.open("wb")
        self.proc = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
        handle.close()
        return self.proc

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

class InProcessServer:
    """An `http.server` answering in a daemon thread on 127.0.0.1 (for services the tests write in Python)."""

    port: int
    _server: ThreadingHTTPServer

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

class Registry(Server):
    """A Distribution registry. `host` is `127.0.0.1:PORT`; `tls` is a trustme CA (or None)."""

    def __init__(
        self,
        workdir: Path,
        *,
        tls=None,
        htpasswd: dict[str, str] | None = None,
        token: dict | None = None,
        hostname: str = "127.0.0.1",
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.port = free_port()
        self.host = f"{hostname}:{self.port}"
        config: dict = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "storage")}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }
        if tls is not None:
            cert = tls.issue_cert("127.0.0.1", "localhost", hostname)
            cert.private_key_pem.write_to_path(str(self.workdir / "server.key"))
            cert.cert_chain_pems[0].write_to_path(str(self.workdir / "server.crt"))
            config["http"]["tls"] = {
                "certificate": str(self.workdir / "server.crt"),
                "key": str(self.workdir / "server.key"),
            }
        if htpasswd:
            path = self.workdir / "htpasswd"
            path.write_text(htpasswd_lines(htpasswd))
            config["auth"] = {"htpasswd": {"realm": "wsm-test", "path": str(path)}}
        if token:
            config["auth"] = {"token": token}
        (self.workdir / "config.yml").write_text(yaml.safe_dump(config))
        log = self.workdir / "registry.log"
        proc = self._spawn([system_binary("docker-registry"), "serve", str(self.workdir / "config.yml")], log)
        wait_for_port(self.port, proc, log)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

def htpasswd_lines(users: dict[str, str]) -> str:
    import bcrypt

    # Cost 4: the registry re-checks bcrypt on every request, a higher cost would dominate test timings.
    return "".join(
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n" for user, pw in users.items()
    )

class HelmRepo(Server):
    """nginx serving `root` as a classic Helm repository; PUT/DELETE need `auth` (user, password) when given."""

    def __init__(self, workdir: Path, *, auth: tuple[str, str] | None = None):
        self.workdir = Path(workdir)
        self.root = self.workdir / "repo"
        for sub in ("repo", "tmp", "logs"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        guard = ""
        if auth:
            (self.workdir / "htpasswd").write_text(htpasswd_lines({auth[0]: auth[1]}))
            guard = f'limit_except GET HEAD {{ auth_basic "helm"; auth_basic_user_file {self.workdir}/htpasswd; }}'
        w = self.workdir
        # `user root`: started as root, workers would otherwise run as nobody and PUT would answer 500.
        conf = f"""
daemon off;
user root;
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log {w}/logs/access.log;
  client_body_temp_path {w}/tmp/body;
  proxy_temp_path {w}/tmp/proxy;
  fastcgi_temp_path {w}/tmp/fastcgi;
  uwsgi_temp_path {w}/tmp/uwsgi;
  scgi_temp_path {w}/tmp/scgi;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{self.port};
    root {self.root};
    location / {{
      autoindex on;
      dav_methods PUT DELETE;
      create_full_put_path on;
      {guard}
    }}
  }}
}}
"""
        (w / "nginx.conf").write_text(conf)
        log = w / "logs" / "nginx.out"
        proc = self._spawn([system_binary("nginx"), "-c", str(w / "nginx.conf"), "-p", str(w)], log)
        wait_for_port(self.port, proc, log)

class DockerEngine(Server):
    """dockerd on a private socket, vfs storage, no bridge or iptables: enough for `docker load`."""

    def __init__(self, workdir: Path):
        w = Path(workdir)
        w.mkdir(parents=True, exist_ok=True)
        self.socket = w / "docker.sock"
        self.url = f"unix://{self.socket}"
        argv = [
            system_binary("dockerd"),
            f"--host={self.url}",
            f"--data-root={w / 'data'}",
            f"--exec-root={w / 'exec'}",
            f"--pidfile={w / 'docker.pid'}",
            "--storage-driver=vfs",
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
        ]
        log = w / "dockerd.log"
        proc = self._spawn(argv, log)
        deadline = time.monotonic() + 60
        while not self._answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dockerd did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        result = subprocess.run(
            ["docker", "-H", self.url, "version", "--format", "{{.Server.Version}}"], capture_output=True
        )
        return result.returncode == 0

def helm_binary() -> str | None:
    local = TOOLS_BIN / "helm"
    if local.exists():
        return str(local)
    return shutil.which("helm")

def helm_env(home: Path) -> dict[str, str]:
    """Environment that keeps helm's config, cache and data in a test directory."""
    return {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }

def run_helm(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    helm = helm_binary()
    assert helm, "helm is not installed: run scripts/test-prereqs.sh"
    result = subprocess.run([helm, *args], capture_output=True, text=True, env=helm_env(home))
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
    return result

class Containerd(Server):
    """containerd on a private socket with the CRI plugin off: enough for `ctr content fetch --hosts-dir`."""

    def __init__(self, workdir: Path):
        w = Path(workdir)
        w.mkdir(parents=True, exist_ok=True)
        self.socket = w / "containerd.sock"
        config = w / "config.toml"
        config.write_text(
            f'version = 2\nroot = "{w}/root"\nstate = "{w}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
        )
        log = w / "containerd.log"
        proc = self._spawn([system_binary("containerd"), "--config", str(config)], log)
        deadline = time.monotonic() + 30
        while not self.ctr("version").returncode == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"containerd did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)

    def ctr(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([system_binary("ctr"), "--address", str(self.socket), *args], capture_output=True,
                              text=True, env={**os.environ, **(env or {})})
