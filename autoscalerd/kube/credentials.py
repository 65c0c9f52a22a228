"""Credentials: build a private `Configuration` from a kubeconfig or the pod's service account.

The global default `Configuration` of kubernetes_asyncio is never read or written: every
`KubeClient` gets its own `Configuration` and its own `ApiClient`.

Token refresh:

- in cluster, kubernetes_asyncio's own `refresh_api_key_hook` re-reads the projected token
  file every 60 s (bound tokens rotate at ~80 % of their 1 h lifetime);
- with a kubeconfig `exec` plugin (EKS, GKE, OIDC helpers), nothing refreshes by default. We
  install an async `refresh_api_key_hook` that re-runs the plugin when its
  `expirationTimestamp` is near (the library keeps a 5-minute skew), after a 401, and at
  least every `EXEC_REFRESH_WITHOUT_EXPIRY` when the plugin gives no expiry.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from autoscalerd.kube.errors import KubeConfigError, KubeUnauthorized

log = structlog.get_logger(__name__)

__all__ = ["Credentials", "load_credentials"]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_REFRESH_WITHOUT_EXPIRY = 600.0
"""Re-run an exec plugin that reports no expiry at least this often (seconds)."""
LOAD_TIMEOUT = 60.0
"""Bound on loading a kubeconfig, exec plugin run included (kubernetes_asyncio has none)."""


@dataclass(slots=True)
class Credentials:
    """A loaded, private `Configuration` plus what we know about where it came from."""

    configuration: Any
    """kubernetes_asyncio `Configuration` (private to one client)."""
    source: str
    """`in-cluster` or `kubeconfig:PATH[@CONTEXT]`, for logs."""
    default_namespace: str
    refresher: _ExecRefresher | None = None

    def invalidate_token(self) -> None:
        """Called after a 401: force the next request to refresh an exec-plugin token."""
        if self.refresher is not None:
            self.refresher.invalidate()


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
        InClusterConfigLoader(
            token_filename=str(sa_dir / "token"),
            cert_filename=str(sa_dir / "ca.crt"),
            try_refresh_token=True,
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
    return Credentials(
        configuration=configuration, source="in-cluster", default_namespace=namespace
    )


def _kubeconfig_path(kubeconfig: str | None) -> str:
    if kubeconfig:
        return kubeconfig
    env = os.environ.get("KUBECONFIG")
    if env:
        return env  # may be a ':'-separated list; the loader merges it
    return str(Path("~/.kube/config").expanduser())


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
        async with asyncio.timeout(LOAD_TIMEOUT):
            await loader.load_and_set(configuration)
    except KubeConfigError:
        raise
    except TimeoutError as exc:
        raise KubeConfigError(
            f"kubeconfig {path}: loading credentials took over {LOAD_TIMEOUT:g}s "
            "(a hung exec plugin?)"
        ) from exc
    except (ConfigException, OSError, KeyError, ValueError, TypeError, AssertionError) as exc:
        where = f"{path} (context {context!r})" if context else path
        raise KubeConfigError(f"kubeconfig {where}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # exec plugin failures surface as plain Exception
        raise KubeConfigError(f"kubeconfig {path}: credential plugin failed: {exc}") from exc

    current = loader.current_context or {}
    ctx = current.get("context", {}) if isinstance(current, dict) else {}
    namespace = str(ctx.get("namespace") or "default")
    name = current.get("name") if isinstance(current, dict) else None
    source = f"kubeconfig:{path}" + (f"@{name}" if name else "")

    refresher: _ExecRefresher | None = None
    user = getattr(loader, "_user", None)
    if user is not None and "exec" in user:
        refresher = _ExecRefresher(loader)
        configuration.refresh_api_key_hook = refresher.hook
    log.info(
        "kube credentials loaded",
        source=source,
        server=configuration.host,
        exec_plugin=refresher is not None,
        tls_server_name=configuration.tls_server_name,
    )
    return Credentials(
        configuration=configuration,
        source=source,
        default_namespace=namespace,
        refresher=refresher,
    )


class _ExecRefresher:
    """Async `refresh_api_key_hook` that keeps an exec-plugin bearer token fresh.

    Called by kubernetes_asyncio before every request, so the fast path is a couple of
    comparisons; the plugin runs under a lock so concurrent requests run it once.
    """

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._lock = asyncio.Lock()
        self._forced = False
        self._loaded_at = asyncio.get_running_loop().time()

    def invalidate(self) -> None:
        self._forced = True

    def _due(self) -> bool:
        if self._forced:
            return True
        expiry = getattr(self._loader, "exec_plugin_expiry", None)
        if expiry is None:
            age = asyncio.get_running_loop().time() - self._loaded_at
            return age >= EXEC_REFRESH_WITHOUT_EXPIRY
        from kubernetes_asyncio.config.kube_config import _is_expired

        return bool(_is_expired(expiry))

    async def hook(self, configuration: Any) -> None:
        if not self._due():
            return
        async with self._lock:
            if not self._due():
                return
            forced = self._forced or getattr(self._loader, "exec_plugin_expiry", None) is None
            if forced and hasattr(self._loader, "exec_plugin_expiry"):
                del self._loader.exec_plugin_expiry  # the loader's own cache check
            try:
                await self._loader.load_from_exec_plugin()
            except Exception as exc:
                raise KubeUnauthorized(f"credential exec plugin failed: {exc}") from exc
            token = getattr(self._loader, "token", None)
            if token:
                configuration.api_key["BearerToken"] = token
            self._forced = False
            self._loaded_at = asyncio.get_running_loop().time()
            log.info("kube exec credential refreshed")
