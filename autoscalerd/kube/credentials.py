"""Credentials: build a private `Configuration` from a kubeconfig or the pod's service account,
keep it fresh, and say so when the API server rejects it.

The global default `Configuration` of kubernetes_asyncio is never read or written: every
`KubeClient` gets its own `Configuration` and its own `ApiClient`s.

How each kind of credential stays fresh (timing in `autoscalerd.kube.refresh`):

| credential | refreshed |
|---|---|
| in-cluster service-account token | file re-read when it changes, at least every 60 s, after a 401 |
| kubeconfig `tokenFile` | the same |
| kubeconfig `exec` plugin, token or client certificate | before its own `expirationTimestamp` (20 % of the lifetime early, at most 5 min), every 10 min without one, once after a 401; a new certificate reloads the TLS context of every pool |
| kubeconfig `token`, `client-certificate`/`client-key`, basic auth | static: never |
| kubeconfig `auth-provider` (oidc, gcp, azure) | refused at start: the message names the exec-plugin replacement |

The transport calls `before_call()` before every request (a comparison and, for a token
file, one `stat`), and `accepted()`/`rejected()` after it. Refreshes run one at a time, in a
task of their own, so a caller's timeout never kills a plugin run half-way.

A credential rejected with 401 on every call is one classified problem,
`credentials_rejected` (`Credentials.rejection`), logged once per streak with the fix; it
clears by itself at the first accepted call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from autoscalerd.kube.errors import KubeConfigError
from autoscalerd.kube.refresh import (
    CredentialSource,
    ExecSource,
    Fetched,
    RefreshSchedule,
    TokenFileSource,
)

log = structlog.get_logger(__name__)

__all__ = ["CREDENTIALS_REJECTED", "Credentials", "CredentialsRejected", "load_credentials"]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
LOAD_TIMEOUT = 60.0
"""Bound on loading a kubeconfig, and on each exec plugin run (kubernetes_asyncio has none)."""
CREDENTIALS_REJECTED = "credentials_rejected"
"""The classified problem name, in the log, `/status` and `autoscalerd status`."""

_PROVIDER_REPLACEMENTS = {
    "oidc": "kubelogin (`kubectl oidc-login get-token --oidc-issuer-url=... "
    "--oidc-client-id=...`, https://github.com/int128/kubelogin)",
    "gcp": "gke-gcloud-auth-plugin (`gcloud components install gke-gcloud-auth-plugin`, "
    "then `gcloud container clusters get-credentials CLUSTER`)",
    "azure": "kubelogin for Azure (`kubelogin convert-kubeconfig -l azurecli`)",
}


@dataclass(frozen=True, slots=True)
class CredentialsRejected:
    """Every API call since `since` was answered 401 Unauthorized."""

    since: float
    """Event-loop time (`loop.time()`) of the first rejected call of the streak."""
    since_wall: float
    """The same moment as a Unix timestamp, for `/status`."""
    calls: int
    """Rejected calls in the streak."""
    message: str
    """What happened and how to fix it."""
    problem: str = CREDENTIALS_REJECTED


class Credentials:
    """A loaded, private `Configuration`, what refreshes it, and whether it is accepted.

    Implements the transport's `CallAuth` (`before_call`, `accepted`, `rejected`).
    """

    def __init__(
        self,
        configuration: Any,
        source: str,
        default_namespace: str,
        *,
        rotating: CredentialSource | None = None,
        fix: str = "",
        cert_dir: Path | None = None,
    ) -> None:
        self.configuration = configuration
        """kubernetes_asyncio `Configuration` (private to one client)."""
        self.source = source
        """`in-cluster` or `kubeconfig:PATH[@CONTEXT]`, for logs."""
        self.default_namespace = default_namespace
        self.rotating = rotating
        self.generation = 0
        """Bumped by every successful refresh: a 401 to an older generation is stale."""
        self._fix = fix
        self._cert_dir = cert_dir
        self._cert_files: tuple[str, str] | None = None
        self._cert_serial = 0
        self._tls_reloaders: list[Callable[[str, str], None]] = []
        self._schedule: RefreshSchedule | None = None
        self._task: asyncio.Task[None] | None = None
        self._forced_generation = -1
        self._rejected_since: tuple[float, float] | None = None
        self._rejected_calls = 0
        self._rejected_logged = False

    # -- refresh --------------------------------------------------------------------------

    def start_schedule(self, lifetime: float | None) -> None:
        """Begin refreshing `rotating` (just fetched, valid for `lifetime` seconds)."""
        if self.rotating is None:
            return
        self._schedule = RefreshSchedule(self.rotating.fallback_interval)
        self._schedule.succeeded(asyncio.get_running_loop().time(), lifetime)

    def on_client_cert(self, reload: Callable[[str, str], None]) -> None:
        """Call `reload(cert_file, key_file)` whenever the client certificate changes."""
        self._tls_reloaders.append(reload)

    async def before_call(self) -> int:
        """Refresh if due (waiting for a refresh already running); return the generation."""
        schedule = self._schedule
        if schedule is None or self.rotating is None:
            return self.generation
        now = asyncio.get_running_loop().time()
        if schedule.due(now) or self.rotating.changed():
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(
                    self._refresh(), name="kube-credentials-refresh"
                )
            # shield: a caller's timeout must not cancel the plugin run the others wait on
            await asyncio.shield(self._task)
        return self.generation

    async def _refresh(self) -> None:
        assert self.rotating is not None and self._schedule is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(LOAD_TIMEOUT):
                fetched = await self.rotating.fetch()
            self.apply(fetched)
        except Exception as exc:  # the plugin or the file: anything may go wrong
            self._schedule.failed(loop.time())
            log.warning(
                "kube credentials refresh failed; keeping the current credentials",
                source=self.source,
                kind=self.rotating.kind,
                error=str(exc) or type(exc).__name__,
                failures=self._schedule.failures,
                retry_in_seconds=round(self._schedule.next_due - loop.time(), 1),
            )
            return
        self.generation += 1
        self._schedule.succeeded(loop.time(), fetched.lifetime)
        log.info(
            "kube credentials refreshed",
            source=self.source,
            kind=self.rotating.kind,
            expires_in_seconds=None if fetched.lifetime is None else round(fetched.lifetime, 1),
            next_refresh_in_seconds=round(self._schedule.next_due - loop.time(), 1),
        )

    def apply(self, fetched: Fetched) -> None:
        """Install a fetched credential: the bearer token every pool sends, and a client
        certificate loaded into every pool's TLS context."""
        if fetched.token is not None:
            self.configuration.api_key["BearerToken"] = f"Bearer {fetched.token}"
        if fetched.client_cert is not None and fetched.client_key is not None:
            cert_file, key_file = self._write_client_cert(fetched.client_cert, fetched.client_key)
            self.configuration.cert_file = cert_file
            self.configuration.key_file = key_file
            for reload in self._tls_reloaders:
                reload(cert_file, key_file)

    def _write_client_cert(self, cert: bytes, key: bytes) -> tuple[str, str]:
        if self._cert_dir is None:
            self._cert_dir = Path(tempfile.mkdtemp(prefix="autoscalerd-exec-"))  # mode 0700
        self._cert_serial += 1
        stem = self._cert_dir / f"client-{self._cert_serial}"
        paths = (str(stem.with_suffix(".crt")), str(stem.with_suffix(".key")))
        for path, data in zip(paths, (cert, key), strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        old, self._cert_files = self._cert_files, paths
        if old is not None:
            for path in old:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return paths

    # -- accepted / rejected ----------------------------------------------------------------

    def accepted(self) -> None:
        if self._rejected_since is None and (
            self._schedule is None or not self._schedule.rejections
        ):
            return  # the hot path: nothing to clear
        if self._schedule is not None:
            self._schedule.accepted()
        if self._rejected_since is not None:
            if self._rejected_logged:
                log.info(
                    "kube credentials accepted again",
                    problem_cleared=CREDENTIALS_REJECTED,
                    source=self.source,
                    rejected_calls=self._rejected_calls,
                )
            self._rejected_since = None
            self._rejected_calls = 0
            self._rejected_logged = False

    def rejected(self, generation: int) -> None:
        if generation < self.generation:
            return  # sent with credentials that have been replaced since
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._rejected_since is None:
            self._rejected_since = (now, time.time())
        self._rejected_calls += 1
        if self._schedule is not None and generation != self._forced_generation:
            self._forced_generation = generation
            self._schedule.rejected(now)
        # with a refreshable source the first 401 only forces a refresh; it is a problem
        # when the fresh credential is rejected too (or there is nothing to refresh)
        if not self._rejected_logged and (self._schedule is None or self._rejected_calls >= 2):
            self._rejected_logged = True
            rejection = self.rejection
            assert rejection is not None
            log.error(
                "kube credentials rejected",
                problem=CREDENTIALS_REJECTED,
                source=self.source,
                message=rejection.message,
            )

    @property
    def rejection(self) -> CredentialsRejected | None:
        """The `credentials_rejected` problem while every call is answered 401, else None."""
        if self._rejected_since is None:
            return None
        since, since_wall = self._rejected_since
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since_wall))
        message = (
            f"the Kubernetes API rejects the credentials ({self.source}) with 401 Unauthorized "
            f"on every call since {when} ({self._rejected_calls} calls); {self._fix}"
        )
        return CredentialsRejected(since, since_wall, self._rejected_calls, message)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._cert_dir is not None:
            shutil.rmtree(self._cert_dir, ignore_errors=True)


# -- loading ----------------------------------------------------------------------------------


def _want_in_cluster(kubeconfig: str | None, in_cluster: bool | None) -> bool:
    if in_cluster is not None:
        return in_cluster
    if kubeconfig or os.environ.get("KUBECONFIG"):
        return False
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


async def load_credentials(
    kubeconfig: str | None,
    context: str | None,
    in_cluster: bool | None,
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> Credentials:
    """Load credentials. `in_cluster=None` means auto: in cluster when `KUBERNETES_SERVICE_HOST`
    is set and neither `kubeconfig` nor `$KUBECONFIG` is given (a `~/.kube/config` baked into
    an image does not win over the service account)."""
    from kubernetes_asyncio import client as k8s

    configuration = k8s.Configuration()
    if _want_in_cluster(kubeconfig, in_cluster):
        return _load_in_cluster(configuration, service_account_dir)
    return await _load_kubeconfig(configuration, kubeconfig, context)


def _load_in_cluster(configuration: Any, sa_dir: Path) -> Credentials:
    from kubernetes_asyncio.config import ConfigException
    from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

    try:
        # no library refresh hook: our TokenFileSource re-reads the token (on change, every
        # 60 s, after a 401)
        InClusterConfigLoader(
            token_filename=str(sa_dir / "token"),
            cert_filename=str(sa_dir / "ca.crt"),
            try_refresh_token=False,
        ).load_and_set(configuration)
    except (ConfigException, OSError) as exc:
        raise KubeConfigError(
            f"in-cluster credentials: {exc} (is a service account token mounted at {sa_dir}?)"
        ) from exc
    namespace = "default"
    try:
        namespace = (sa_dir / "namespace").read_text().strip() or "default"
    except OSError:
        pass
    log.info("kube credentials loaded", source="in-cluster", server=configuration.host)
    creds = Credentials(
        configuration,
        "in-cluster",
        namespace,
        rotating=TokenFileSource(sa_dir / "token"),
        fix=(
            'run `kubectl get --raw /version --token "$(cat '
            f'{sa_dir}/token)"` in the pod to see why; check that the service account '
            "exists and its token is mounted and not expired (autoscalerd re-reads the "
            "token file, no restart needed)"
        ),
    )
    creds.start_schedule(None)
    return creds


def _kubeconfig_path(kubeconfig: str | None) -> str:
    if kubeconfig:
        return kubeconfig
    env = os.environ.get("KUBECONFIG")
    if env:
        return env  # may be a ':'-separated list; the loader merges it
    return str(Path("~/.kube/config").expanduser())


def _refuse_auth_provider(where: str, user: Any) -> None:
    """kubernetes_asyncio refreshes OIDC and GCP providers only from `refresh_token()` loops
    we do not run (and persists refreshed tokens into the kubeconfig); client-go removed the
    in-tree providers. Refuse them with the replacement rather than expire silently."""
    if user is None or "auth-provider" not in user:
        return
    name = str(user["auth-provider"].safe_get("name") or "?")
    replacement = _PROVIDER_REPLACEMENTS.get(name, "the provider's exec credential plugin")
    raise KubeConfigError(
        f"kubeconfig {where}: the user uses the {name!r} auth-provider, which autoscalerd does "
        f"not support (its tokens would expire without a refresh); use an exec credential "
        f"plugin instead: {replacement}"
    )


async def _load_kubeconfig(
    configuration: Any, kubeconfig: str | None, context: str | None
) -> Credentials:
    from kubernetes_asyncio.config import ConfigException
    from kubernetes_asyncio.config.kube_config import KubeConfigLoader, KubeConfigMerger

    path = _kubeconfig_path(kubeconfig)
    paths = [p for p in path.split(os.pathsep) if p]
    if not any(Path(p).expanduser().is_file() for p in paths):
        raise KubeConfigError(
            f"kubeconfig {path!r} not found (pass --kubeconfig, set $KUBECONFIG, "
            "or use --in-cluster inside a pod)"
        )
    where = f"{path} (context {context!r})" if context else path
    rotating: CredentialSource | None = None
    fetched: Fetched | None = None
    try:
        merged = KubeConfigMerger(path)
        doc: dict[str, Any] = merged.config.value if merged.config is not None else {}
        names = [str(c["name"]) for c in doc.get("contexts") or []]
        wanted = context or doc.get("current-context")
        if not wanted or wanted not in names:
            raise KubeConfigError(
                f"kubeconfig {path}: context {wanted!r} not found "
                f"(available: {', '.join(names) or 'none'})"
            )
        # config_base_path=None: relative file names resolve against each file's directory.
        # No config_persister: the daemon never writes the user's kubeconfig.
        loader = KubeConfigLoader(
            config_dict=merged.config, active_context=context, config_base_path=None
        )
        user = loader._user
        _refuse_auth_provider(where, user)
        rotating = _rotating_source(loader, user)
        async with asyncio.timeout(LOAD_TIMEOUT):
            if rotating is None:
                await loader.load_and_set(configuration)
            else:
                fetched = await rotating.fetch()
                # what load_and_set does, with our credential instead of its own
                loader._load_cluster_info()
                loader._set_config(configuration)
    except KubeConfigError:
        raise
    except TimeoutError as exc:
        raise KubeConfigError(
            f"kubeconfig {path}: loading credentials took over {LOAD_TIMEOUT:g}s "
            "(a hung exec plugin?)"
        ) from exc
    except (ConfigException, OSError, KeyError, ValueError, TypeError, AssertionError) as exc:
        kind = f"{rotating.kind}: " if rotating is not None else ""
        raise KubeConfigError(f"kubeconfig {where}: {kind}{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # exec plugin failures surface as plain Exception
        raise KubeConfigError(f"kubeconfig {path}: credential plugin failed: {exc}") from exc

    current = loader.current_context or {}
    ctx = current.get("context", {}) if isinstance(current, dict) else {}
    namespace = str(ctx.get("namespace") or "default")
    name = current.get("name") if isinstance(current, dict) else None
    source = f"kubeconfig:{path}" + (f"@{name}" if name else "")
    command = f"KUBECONFIG={path} kubectl" + (f" --context {name}" if name else "")
    creds = Credentials(
        configuration,
        source,
        namespace,
        rotating=rotating,
        fix=(
            f"run `{command} get --raw /version` with the same kubeconfig to see why, then "
            "renew the credentials there (log in again, rotate the token or certificate); "
            "autoscalerd picks up new credentials without a restart"
            if rotating is not None
            else f"run `{command} get --raw /version` with the same kubeconfig to see why; "
            "this user's token or certificate is static: replace it (a tokenFile or an exec "
            "plugin is re-read without a restart)"
        ),
    )
    if fetched is not None:
        creds.apply(fetched)
        creds.start_schedule(fetched.lifetime)
    log.info(
        "kube credentials loaded",
        source=source,
        server=configuration.host,
        refreshed_from=rotating.kind if rotating is not None else None,
        tls_server_name=configuration.tls_server_name,
    )
    return creds


def _rotating_source(loader: Any, user: Any) -> CredentialSource | None:
    """The user's credential that rotates: an exec plugin, or a `tokenFile` (when no inline
    `token` wins over it, as in client-go)."""
    if user is None:
        return None
    if "exec" in user:
        return ExecSource(user["exec"])
    if "tokenFile" in user and not user.safe_get("token"):
        base = loader._get_base_path(user.path)
        return TokenFileSource(Path(os.path.normpath(os.path.join(base, user["tokenFile"]))))
    return None
