"""A real Kubernetes API server without Docker, for the tests and the benchmarks.

By default the session starts its own control plane: etcd and kube-apiserver, built from Go
modules by ``tools/kube/build.sh`` (once per machine, cached outside the repository), on free
loopback ports, with freshly generated certificates, a static admin token (group
``system:masters``) and RBAC authorization. It installs the repository's ``crds/*.yaml`` and
stops everything at the end of the session, also after a failure.

When ``EVENTIX_TEST_KUBECONFIG`` names a kubeconfig file, that cluster is used instead (kind,
minikube, a real one): nothing is built or started.

What this control plane does not have: no kube-controller-manager, no scheduler, no kubelet.
So Deployments get no ReplicaSets or Pods, deleted namespaces stay ``Terminating`` forever
(nothing finalizes them), and no ``default`` ServiceAccount or token is created (the
ServiceAccount admission plugin is disabled for that reason). Garbage collection of owned
objects does not happen either. The API itself (validation, CEL, admission, RBAC, conflicts,
subresources, finalizers, watches) is the real one.

:func:`kube_api_session` gives one for a ``with`` block; the tests' pytest plugin
(``tests/support/kube.py``) and ``bench/operator.py`` use it.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import ipaddress
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("eventix.tests.kube")

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "kube" / "build.sh"
CRDS_DIR = REPO_ROOT / "crds"
KUBECONFIG_ENV = "EVENTIX_TEST_KUBECONFIG"

ADMIN_USER = "eventix-test-admin"
SERVICE_CIDR = "10.0.0.0/24"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0


class KubeStartError(RuntimeError):
    """The local control plane did not come up; the message has the tail of its log."""


# --------------------------------------------------------------------------------------------
# Binaries


def to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def ensure_binaries(*names: str, progress: Callable[[str], None] = to_stderr) -> dict[str, Path]:
    """Paths of the named tools (kube-apiserver, etcd, kubectl, helm), built when missing.

    ``tools/kube/build.sh`` is a no-op for binaries already in the cache; a first build takes
    several minutes. Its progress lines are passed to ``progress`` (default: our stderr),
    except the Go command's one line per downloaded module, which are summed up in one line.
    """
    if not BUILD_SCRIPT.is_file():
        raise FileNotFoundError(f"{BUILD_SCRIPT} is missing")
    proc = subprocess.Popen(
        ["bash", str(BUILD_SCRIPT), "--print-paths", *names],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    tail: list[str] = []
    downloading = False
    for raw in proc.stderr:
        line = raw.rstrip()
        tail = [*tail[-19:], line]
        if line.startswith("go: downloading "):
            if not downloading:
                progress("downloading Go modules from the Go module proxy…")
            downloading = True
            continue
        progress(line)
    out = proc.stdout.read() if proc.stdout else ""
    proc.wait()
    if proc.returncode != 0:
        shown = "\n".join(t for t in tail if not t.startswith("go: downloading "))
        raise RuntimeError(
            f"tools/kube/build.sh {' '.join(names)} failed (exit {proc.returncode}):\n{shown}"
        )
    paths: dict[str, Path] = {}
    for line in out.splitlines():
        name, sep, path = line.partition("=")
        if sep:
            paths[name] = Path(path)
    missing = [n for n in names if n not in paths]
    if missing:
        raise RuntimeError(f"{BUILD_SCRIPT} printed no path for {', '.join(missing)}")
    return paths


def tool_version(path: Path) -> str:
    """The version a cached tool was built at: the cache directory is ``<name>-<version>``."""
    return path.parent.name.removeprefix(f"{path.name}-")


# --------------------------------------------------------------------------------------------
# Certificates and credentials


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Pki:
    """A throwaway CA, a serving certificate for 127.0.0.1/localhost and the SA signing keys."""

    ca_cert: bytes
    serving_cert: bytes
    serving_key: bytes
    sa_private_key: bytes
    sa_public_key: bytes

    @classmethod
    def generate(cls) -> Pki:
        now = datetime.datetime.now(datetime.UTC)
        not_before = now - datetime.timedelta(minutes=5)
        not_after = now + datetime.timedelta(days=2)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eventix-test-ca")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )

        serving_key = ec.generate_private_key(ec.SECP256R1())
        serving = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(serving_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )

        sa_key = ec.generate_private_key(ec.SECP256R1())
        return cls(
            ca_cert=_pem_cert(ca),
            serving_cert=_pem_cert(serving),
            serving_key=_pem_key(serving_key),
            sa_private_key=_pem_key(sa_key),
            sa_public_key=sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )


def write_kubeconfig(path: Path, *, server: str, ca_cert: bytes, token: str) -> None:
    """A kubeconfig with one cluster, one token user and one current context."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "eventix-test",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_cert).decode(),
                },
            }
        ],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [
            {"name": "eventix-test", "context": {"cluster": "eventix-test", "user": ADMIN_USER}}
        ],
        "current-context": "eventix-test",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


# --------------------------------------------------------------------------------------------
# Processes


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL the child when its parent (pytest, the bench) dies, even by
    SIGKILL (no atexit then)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Process:
    """A child in its own process group, logging to a file; stop() ends the whole group."""

    name: str
    argv: Sequence[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        log.debug("started %s (pid %d): %s", self.name, self.popen.pid, " ".join(self.argv))

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        proc = self.popen
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s did not stop in %.0fs after SIGTERM; killing it", self.name, timeout
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)


def _stop_all(processes: list[Process], workdir: Path | None) -> None:
    """Stop in reverse start order and remove the work directory. Safe to call repeatedly."""
    while processes:
        proc = processes.pop()
        try:
            proc.stop()
        except Exception:  # a safety net must not stop halfway
            log.exception("stopping %s failed", proc.name)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The local control plane


WORKDIR_PREFIX = "eventix-kube-"
OWNER_FILE = "owner.pid"


def _tmp_base() -> str:
    """A memory-backed directory for etcd's data when there is one (/dev/shm on Linux)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return str(shm)
    return tempfile.gettempdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_stale_workdirs(base: str) -> None:
    """Remove work directories left by sessions that were killed (their children died with
    them, see die_with_parent, but a killed process cleans up no files)."""
    for path in Path(base).glob(f"{WORKDIR_PREFIX}*"):
        try:
            owner = int((path / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            log.info("removing %s, left by a killed test session (pid %d)", path, owner)
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class LocalControlPlane:
    """etcd + kube-apiserver on loopback ports, in a temporary directory."""

    etcd_bin: Path
    apiserver_bin: Path
    workdir: Path = field(init=False)
    token: str = field(init=False)
    server: str = field(init=False)
    kubeconfig: Path = field(init=False)
    ca_cert: bytes = field(init=False)
    _processes: list[Process] = field(init=False, default_factory=list)

    def start(self, timeout: float = START_TIMEOUT, attempts: int = 3) -> None:
        """Start etcd and kube-apiserver and wait until the API server is ready. A port that
        another process took between choosing and binding it means another try."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                return
            except KubeStartError as err:
                if attempt == attempts or "address already in use" not in str(err):
                    raise
                log.warning("a port was taken meanwhile, starting again: %s", err)

    def _start_once(self, timeout: float) -> None:
        started = time.monotonic()
        base = _tmp_base()
        _reap_stale_workdirs(base)
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=base))
        (self.workdir / OWNER_FILE).write_text(str(os.getpid()))
        # Safety net: the same cleanup when this object is collected and, at the latest, at
        # interpreter exit (weakref.finalize runs at exit by default). If pytest is killed
        # outright, PR_SET_PDEATHSIG ends the children (see die_with_parent).
        weakref.finalize(self, _stop_all, self._processes, self.workdir)
        try:
            self._start(started + timeout)
        except BaseException:
            self.stop()
            raise
        log.info(
            "kube-apiserver %s (etcd %s) ready at %s in %.1fs; kubeconfig %s",
            tool_version(self.apiserver_bin),
            tool_version(self.etcd_bin),
            self.server,
            time.monotonic() - started,
            self.kubeconfig,
        )

    def stop(self) -> None:
        _stop_all(self._processes, self.workdir)

    def _start(self, deadline: float) -> None:
        work = self.workdir
        pki = Pki.generate()
        files = {
            "ca.crt": pki.ca_cert,
            "apiserver.crt": pki.serving_cert,
            "apiserver.key": pki.serving_key,
            "sa.key": pki.sa_private_key,
            "sa.pub": pki.sa_public_key,
        }
        for name, data in files.items():
            (work / name).write_bytes(data)
            (work / name).chmod(0o600)
        self.ca_cert = pki.ca_cert
        self.token = secrets.token_urlsafe(32)
        (work / "tokens.csv").write_text(
            f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        )

        etcd_port, peer_port, api_port = free_ports(3)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = Process(
            "etcd",
            [
                str(self.etcd_bin),
                "--name=eventix-test",
                f"--data-dir={work / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=eventix-test={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            work / "etcd.log",
        )
        self._processes.append(etcd)
        etcd.start()
        self._wait_http(etcd, f"{etcd_url}/health", deadline, check_body=b'"health":"true"')

        self.server = f"https://127.0.0.1:{api_port}"
        apiserver = Process(
            "kube-apiserver",
            [
                str(self.apiserver_bin),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={work / 'certs'}",
                f"--tls-cert-file={work / 'apiserver.crt'}",
                f"--tls-private-key-file={work / 'apiserver.key'}",
                f"--etcd-servers={etcd_url}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={work / 'sa.pub'}",
                f"--service-account-signing-key-file={work / 'sa.key'}",
                f"--token-auth-file={work / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                # No controller-manager creates the default ServiceAccount, so do not demand it.
                "--disable-admission-plugins=ServiceAccount",
                # A loopback advertise address may not go into the kubernetes Endpoints.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
            ],
            work / "kube-apiserver.log",
        )
        self._processes.append(apiserver)
        apiserver.start()
        self._wait_http(apiserver, f"{self.server}/readyz", deadline, check_body=b"ok")

        self.kubeconfig = work / "kubeconfig"
        write_kubeconfig(self.kubeconfig, server=self.server, ca_cert=pki.ca_cert, token=self.token)

    def _wait_http(
        self, proc: Process, url: str, deadline: float, *, check_body: bytes | None = None
    ) -> None:
        context: ssl.SSLContext | None = None
        headers: dict[str, str] = {}
        if url.startswith("https:"):
            context = ssl.create_default_context(cadata=self.ca_cert.decode())
            headers["Authorization"] = f"Bearer {self.token}"
        last = "no answer yet"
        while True:
            if not proc.running():
                raise KubeStartError(
                    f"{proc.name} exited with {proc.popen.returncode if proc.popen else '?'} "
                    f"while starting; last lines of {proc.log_path}:\n{proc.log_tail()}"
                )
            try:
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=2, context=context) as resp:
                    body = resp.read()
                    if check_body is None or check_body in body:
                        return
                    last = f"{resp.status}: {body[:200]!r}"
            except urllib.error.HTTPError as err:
                last = f"{err.code}: {err.read()[:500]!r}"
            except (OSError, ssl.SSLError) as err:
                last = repr(err)
            if time.monotonic() > deadline:
                raise KubeStartError(
                    f"{proc.name} not ready at {url} in time ({last}); last lines of "
                    f"{proc.log_path}:\n{proc.log_tail()}"
                )
            time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# What the tests get


_CONDITION_TRUE = "True"


@dataclass
class KubeAPI:
    """A reachable Kubernetes API server and a client configured for it."""

    kubeconfig: Path
    api_client: k8s.ApiClient
    server: str
    token: str | None
    local: bool
    """True when this session started the control plane (no controllers, see module doc)."""

    def new_client(self) -> k8s.ApiClient:
        """A fresh kubernetes.client.ApiClient for the same cluster (e.g. for another thread)."""
        return _new_client_from_config(config_file=str(self.kubeconfig), persist_config=False)

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG, for subprocesses (kubectl, helm, an operator)."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    # CRDs ------------------------------------------------------------------------------------

    def apply_crd(self, manifest: Mapping[str, Any], *, timeout: float = 30.0) -> str:
        """Create or replace a CustomResourceDefinition and wait until it is Established."""
        if manifest.get("kind") != "CustomResourceDefinition":
            raise ValueError(f"not a CustomResourceDefinition: kind={manifest.get('kind')!r}")
        name = str(manifest["metadata"]["name"])
        api = k8s.ApiextensionsV1Api(self.api_client)
        body = k8s.V1CustomResourceDefinition.from_dict(dict(manifest))
        assert body is not None
        assert body.metadata is not None
        try:
            api.create_custom_resource_definition(body)
        except ApiException as err:
            if err.status != 409:
                raise
            for _ in range(5):  # replace needs the current resourceVersion; retry on races
                current = api.read_custom_resource_definition(name)
                assert current.metadata is not None
                body.metadata.resource_version = current.metadata.resource_version
                try:
                    api.replace_custom_resource_definition(name, body)
                    break
                except ApiException as err2:
                    if err2.status != 409:
                        raise
            else:
                raise RuntimeError(f"CRD {name} kept changing while being replaced") from err
        self.wait_crd_established(name, timeout=timeout)
        return name

    def wait_crd_established(self, name: str, *, timeout: float = 30.0) -> None:
        api = k8s.ApiextensionsV1Api(self.api_client)
        deadline = time.monotonic() + timeout
        while True:
            crd = api.read_custom_resource_definition(name)
            conditions = (crd.status.conditions if crd.status else None) or []
            status = {c.type: c for c in conditions}
            established = status.get("Established")
            if established is not None and established.status == _CONDITION_TRUE:
                return
            if time.monotonic() > deadline:
                names = status.get("NamesAccepted")
                detail = f"; NamesAccepted: {names.message}" if names is not None else ""
                raise TimeoutError(f"CRD {name} not Established after {timeout}s{detail}")
            time.sleep(0.05)

    def apply_crds(self, directory: Path = CRDS_DIR) -> list[str]:
        """Apply every CRD in ``directory/*.yaml`` (multi-document files too); their names."""
        names: list[str] = []
        for path in sorted(directory.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                if doc.get("kind") != "CustomResourceDefinition":
                    raise ValueError(f"{path}: only CustomResourceDefinitions belong in crds/")
                names.append(self.apply_crd(doc))
        if names:
            log.info("installed CRDs from %s: %s", directory, ", ".join(names))
        return names

    def delete_crd(self, name: str) -> None:
        """Delete a CRD without waiting (its objects are cleaned up by the apiserver)."""
        with contextlib.suppress(ApiException):
            k8s.ApiextensionsV1Api(self.api_client).delete_custom_resource_definition(name)

    # Namespaces ------------------------------------------------------------------------------

    def create_namespace(self, hint: str = "test") -> str:
        """A new namespace named after ``hint`` plus a random suffix; its name."""
        base = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:50].rstrip("-") or "test"
        body = k8s.V1Namespace(
            metadata=k8s.V1ObjectMeta(
                generate_name=f"{base}-", labels={"eventix.test/namespace": "true"}
            )
        )
        created = k8s.CoreV1Api(self.api_client).create_namespace(body)
        assert created.metadata is not None
        return str(created.metadata.name)

    def delete_namespace(self, name: str) -> None:
        """Start deleting a namespace; do not wait (see the module doc: it may never finish)."""
        with contextlib.suppress(ApiException):
            k8s.CoreV1Api(self.api_client).delete_namespace(name, propagation_policy="Background")


# kubernetes.config has no type hints; this is its signature as far as we use it.
_new_client_from_config: Callable[..., k8s.ApiClient] = k8s_config.new_client_from_config


def _close_client(api_client: k8s.ApiClient) -> None:
    close: Callable[[], None] = api_client.close  # untyped in the kubernetes package
    close()


def _client_from_kubeconfig(path: Path) -> tuple[k8s.ApiClient, str, str | None]:
    api_client = _new_client_from_config(config_file=str(path), persist_config=False)
    configuration = api_client.configuration
    auth = cast(dict[str, str], configuration.api_key).get("authorization")
    token = auth.removeprefix("Bearer ").strip() if auth else None
    return api_client, str(configuration.host), token


def _external_kube_api(kubeconfig: Path) -> KubeAPI:
    if not kubeconfig.is_file():
        raise FileNotFoundError(f"{KUBECONFIG_ENV}={kubeconfig}: no such file")
    api_client, server, token = _client_from_kubeconfig(kubeconfig)
    return KubeAPI(kubeconfig, api_client, server, token, local=False)


@contextlib.contextmanager
def kube_api_session(crds_dir: Path = CRDS_DIR) -> Iterator[KubeAPI]:
    """The whole lifecycle: the cluster from EVENTIX_TEST_KUBECONFIG or a local control plane,
    with the CRDs of ``crds_dir`` installed; everything local is stopped on exit."""
    external = os.environ.get(KUBECONFIG_ENV)
    if external:
        api = _external_kube_api(Path(external).expanduser())
        log.info("using the cluster at %s from %s=%s", api.server, KUBECONFIG_ENV, external)
        try:
            api.apply_crds(crds_dir)
            yield api
        finally:
            _close_client(api.api_client)
        return

    paths = ensure_binaries("etcd", "kube-apiserver")
    plane = LocalControlPlane(etcd_bin=paths["etcd"], apiserver_bin=paths["kube-apiserver"])
    plane.start()
    try:
        api_client, server, token = _client_from_kubeconfig(plane.kubeconfig)
        api = KubeAPI(plane.kubeconfig, api_client, server, token, local=True)
        try:
            api.apply_crds(crds_dir)
            yield api
        finally:
            _close_client(api_client)
    finally:
        plane.stop()
