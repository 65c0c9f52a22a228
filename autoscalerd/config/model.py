"""The validated configuration: frozen, typed, with every default resolved.

Nothing here reads files or YAML; `autoscalerd.config.parse` builds these objects from plain
mappings and `autoscalerd.config.load` feeds it. Durations are float seconds, named so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

_T = TypeVar("_T")

__all__ = [
    "DEFAULT_BODY_BUDGET_BYTES",
    "DEFAULT_BODY_SIZE_LIMIT_BYTES",
    "ApaParams",
    "Authorization",
    "Config",
    "DaemonConfig",
    "Fallback",
    "HpaBehavior",
    "HpaParams",
    "HpaRules",
    "KpaParams",
    "LabelMatcher",
    "LeaderElection",
    "MatchOp",
    "MetricSource",
    "PodAutoscalerSettings",
    "Policy",
    "RatePolicy",
    "Regex",
    "ScaleTargetRef",
    "Schedule",
    "SeriesSelector",
    "Signal",
    "SignalKind",
    "SourceRef",
    "Strategy",
    "TLSConfig",
]

DEFAULT_BODY_SIZE_LIMIT_BYTES = 16 * 1024 * 1024
"""A metrics page larger than this (after decompression) is refused: 16 MiB."""

DEFAULT_BODY_BUDGET_BYTES = 64 * 1024 * 1024
"""What all concurrent scrapes together may buffer of body bytes past each response's free
allowance (1 MiB): 64 MiB, raised to the body size limit if that is larger."""


class Strategy(StrEnum):
    KPA = "KPA"
    APA = "APA"
    HPA = "HPA"


class MatchOp(StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceRef:
    """Where a value came from, for messages: file and 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        # line 0: an object from the API (issue 14), which has no lines
        return f"{self.file}:{self.line}" if self.line else self.file


class Regex(Protocol):
    """A compiled regular expression, as `LabelMatcher` uses it: only `fullmatch`.

    `autoscalerd.config.selector.compile_regex` builds these with RE2 (linear time in the
    length of the value, whatever the pattern): label values come from pages the pods control.
    """

    def fullmatch(self, text: str) -> object | None: ...


_REGEX_MEMO_MAX = 256
"""Label values whose regex outcome one matcher remembers before it starts over."""

_REGEX_MEMO_VALUE_MAX = 128
"""Longer label values are matched every time, not remembered (bounds the memo's memory)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelMatcher:
    """One `label<op>"value"` term of a series selector.

    Regular expressions are fully anchored, as in PromQL: `=~"a|b"` matches `a` or `b`, not `xa`.
    A regex matcher remembers the outcome for the label values it has seen (a page repeats the
    same few values every scrape, and one RE2 call through its Python binding costs ~50 times a
    dict lookup); the memo is bounded in entries and in value length.
    """

    name: str
    op: MatchOp
    value: str
    regex: Regex | None = field(default=None, compare=False, hash=False)
    _memo: dict[str, bool] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False
    )

    def matches(self, actual: str) -> bool:
        """Say whether a label value (`""` when the label is absent) satisfies this term."""
        if self.op is MatchOp.EQ:
            return actual == self.value
        if self.op is MatchOp.NE:
            return actual != self.value
        memo = self._memo
        hit = memo.get(actual)
        if hit is None:
            assert self.regex is not None
            hit = self.regex.fullmatch(actual) is not None
            if len(actual) <= _REGEX_MEMO_VALUE_MAX:
                if len(memo) >= _REGEX_MEMO_MAX:
                    memo.clear()
                memo[actual] = hit
        return hit if self.op is MatchOp.RE else not hit


@dataclass(frozen=True, kw_only=True, slots=True)
class SeriesSelector:
    """A metric name and label matchers: `vllm:num_requests_running{model_name="llama"}`.

    The name matches exactly (never by substring). Histogram and summary series are named by
    their own sample names (`x_sum`, `x_count`, `x_bucket{le="0.5"}`).
    """

    metric: str
    matchers: tuple[LabelMatcher, ...] = ()

    def __str__(self) -> str:
        if not self.matchers:
            return self.metric
        inner = ",".join(f'{m.name}{m.op.value}"{_escape(m.value)}"' for m in self.matchers)
        return f"{self.metric}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True, kw_only=True, slots=True)
class TLSConfig:
    """TLS settings of a metric source (Prometheus Operator `tlsConfig` names).

    `None` means "not set here": a source inherits the DaemonConfig's value, and the daemon
    falls back to the secure default (verify against the system store, Python's X.509 flags).
    """

    insecure_skip_verify: bool | None = None
    ca_file: str | None = None
    server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    min_version: str | None = None
    """`TLS12` or `TLS13`; unset means TLS 1.2."""
    strict_x509: bool | None = None
    """`False` clears Python 3.13's VERIFY_X509_STRICT for older CAs; unset keeps Python's default."""

    def merged_over(self, base: TLSConfig) -> TLSConfig:
        """Return these settings with every unset field taken from `base`."""
        return TLSConfig(
            insecure_skip_verify=_pick(self.insecure_skip_verify, base.insecure_skip_verify),
            ca_file=_pick(self.ca_file, base.ca_file),
            server_name=_pick(self.server_name, base.server_name),
            cert_file=_pick(self.cert_file, base.cert_file),
            key_file=_pick(self.key_file, base.key_file),
            min_version=_pick(self.min_version, base.min_version),
            strict_x509=_pick(self.strict_x509, base.strict_x509),
        )


def _pick(own: _T | None, inherited: _T | None) -> _T | None:
    return own if own is not None else inherited


@dataclass(frozen=True, kw_only=True, slots=True)
class Authorization:
    """`Authorization: <type> <credentials>` sent with each scrape; the file is re-read on change."""

    type: str = "Bearer"
    credentials_file: str


class SignalKind(StrEnum):
    RATE = "rate"
    QUANTILE = "histogram_quantile"


@dataclass(frozen=True, kw_only=True, slots=True)
class Signal:
    """A derived signal of `targetMetric` (`rate(...)`, `histogram_quantile(...)`; DESIGN §2.4):
    computed from each pod's successive scrapes of the source's selector (`config/signals.py`)."""

    kind: SignalKind
    window_seconds: float
    quantile: float | None = None
    """Q of `histogram_quantile`, in [0, 1]; None for `rate`."""
    where: SourceRef | None = field(default=None, compare=False)
    """The `targetMetric` line, for the window check that needs the DaemonConfig."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """One entry of `spec.schedules` (AIbrix; DESIGN §2.5): bounds for a weekly time window."""

    name: str
    timezone: str
    """IANA name (`Europe/Berlin`); `UTC` by default."""
    days: frozenset[int]
    """Days of the week the window applies on, 0 = Monday … 6 = Sunday."""
    start_minute: int
    """Minutes after local midnight, inclusive."""
    end_minute: int
    """Minutes after local midnight, excluded; above `start_minute` (no crossing midnight)."""
    min_replicas: int | None = None
    max_replicas: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricSource:
    """One entry of `spec.metricsSources`: where and what to read (DESIGN §2.3).

    `type` is `pod` (scrape every counted pod), `resource`, `custom`, `external` (`domain` is
    read as `external`) or `prometheus`. Fields a type does not use keep their defaults:
    `port` 0 for the API types, `endpoint` "" for `pod`, `query` "" unless `prometheus`.
    """

    protocol: str = "http"
    """`http` or `https` (`prometheus`: the scheme of `endpoint`)."""
    port: int = 0
    path: str = "/metrics"
    """Always with a leading `/`."""
    type: str = "pod"
    """`pod`, `resource`, `custom`, `external` or `prometheus`."""
    endpoint: str = ""
    """`external`: `host[:port]` (empty: the external.metrics.k8s.io API); `prometheus`: the
    base URL with its scheme."""
    query: str = ""
    """`prometheus`: the PromQL instant query."""
    target_metric: str
    """As written in the policy; also the column name in `simulate` traces."""
    selector: SeriesSelector
    target_value: float
    tls: TLSConfig = TLSConfig()
    authorization: Authorization | None = None
    where: SourceRef | None = field(default=None, compare=False)
    signal: Signal | None = None
    """Set for `rate(...)`/`histogram_quantile(...)`; `selector` is then the inner selector."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ScaleTargetRef:
    api_version: str
    kind: str
    name: str

    @property
    def group(self) -> str:
        """API group (`apps` for `apps/v1`, `""` for the core group)."""
        return self.api_version.split("/", 1)[0] if "/" in self.api_version else ""

    @property
    def version(self) -> str:
        return self.api_version.rsplit("/", 1)[-1]


@dataclass(frozen=True, kw_only=True, slots=True)
class KpaParams:
    """Knative Pod Autoscaler parameters (annotations `kpa.autoscaling.aibrix.ai/*`)."""

    stable_window_seconds: float = 60.0
    panic_window_seconds: float = 6.0
    panic_threshold: float = 2.0
    """Panic when the panic-window demand is this many times the ready pods."""
    scale_down_delay_seconds: float = 0.0
    """A scale-down takes effect only once the lower count held this long (max over the window)."""
    activation_scale: int = 1
    target_burst_capacity: float | None = None
    """Accepted for compatibility; informational only."""
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_period_seconds: float = 30.0


@dataclass(frozen=True, kw_only=True, slots=True)
class ApaParams:
    """AIbrix APA parameters (annotations `apa.autoscaling.aibrix.ai/*`)."""

    up_fluctuation_tolerance: float = 0.1
    down_fluctuation_tolerance: float = 0.2
    window_seconds: float = 60.0
    max_scale_up_rate: float = 2.0
    max_scale_down_rate: float = 2.0
    scale_up_cooldown_seconds: float = 0.0
    """Stabilization: a scale-up takes the lowest recommendation of this window (0 = none)."""
    scale_down_cooldown_seconds: float = 0.0
    """Stabilization: a scale-down takes the highest recommendation of this window (0 = none)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RatePolicy:
    """An HPA `behavior` policy: at most `value` pods or percent per `period_seconds`."""

    type: str
    """`Pods` or `Percent`."""
    value: int
    period_seconds: float


@dataclass(frozen=True, kw_only=True, slots=True)
class HpaRules:
    stabilization_window_seconds: float
    select_policy: str = "Max"
    """`Max`, `Min` or `Disabled`."""
    policies: tuple[RatePolicy, ...] = ()
    tolerance: float = 0.1


def _default_scale_up() -> HpaRules:
    return HpaRules(
        stabilization_window_seconds=0.0,
        policies=(
            RatePolicy(type="Pods", value=4, period_seconds=15.0),
            RatePolicy(type="Percent", value=100, period_seconds=15.0),
        ),
    )


def _default_scale_down() -> HpaRules:
    return HpaRules(
        stabilization_window_seconds=300.0,
        policies=(RatePolicy(type="Percent", value=100, period_seconds=15.0),),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class HpaBehavior:
    """Kubernetes `autoscaling/v2` behavior with its defaults."""

    scale_up: HpaRules = field(default_factory=_default_scale_up)
    scale_down: HpaRules = field(default_factory=_default_scale_down)


@dataclass(frozen=True, kw_only=True, slots=True)
class HpaParams:
    behavior: HpaBehavior = field(default_factory=HpaBehavior)


@dataclass(frozen=True, kw_only=True, slots=True)
class Fallback:
    """After `failure_threshold` consecutive ticks without data, go to `replicas` (KEDA-like)."""

    failure_threshold: int
    replicas: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Policy:
    """One `PodAutoscaler`: what to scale, on which metrics, with which algorithm."""

    namespace: str
    name: str
    target: ScaleTargetRef
    min_replicas: int
    max_replicas: int
    strategy: Strategy
    sources: tuple[MetricSource, ...]
    kpa: KpaParams = KpaParams()
    apa: ApaParams = ApaParams()
    hpa: HpaParams = field(default_factory=HpaParams)
    fallback: Fallback | None = None
    where: SourceRef | None = field(default=None, compare=False)
    schedules: tuple[Schedule, ...] = ()

    @property
    def key(self) -> str:
        """`namespace/name`, unique across the configuration."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaderElection:
    """Lease-based leader election timings (client-go defaults 15 s / 10 s / 2 s)."""

    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0
    lease_name: str = "autoscalerd"
    lease_namespace: str | None = None
    """Unset: the pod's namespace in cluster, else `default`."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PodAutoscalerSettings:
    """Cluster mode (DESIGN §8, `run --podautoscalers`): which PodAutoscaler objects to take."""

    namespaces: tuple[str, ...] = ()
    """Empty: every namespace."""
    label_selector: str = ""
    claim: str = "annotated"
    """`annotated`: only objects annotated `autoscalerd.io/managed: "true"`; `all`: every one."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DaemonConfig:
    """Daemon-wide settings (the optional `DaemonConfig` document)."""

    scrape_interval_seconds: float = 1.0
    scrape_timeout_seconds: float = 0.8
    tls: TLSConfig = TLSConfig()
    authorization: Authorization | None = None
    """Default token for https sources without their own (never sent over plain http)."""
    max_concurrent_scrapes: int = 256
    """At most this many scrapes in flight across all policies."""
    body_size_limit_bytes: int = DEFAULT_BODY_SIZE_LIMIT_BYTES
    body_budget_bytes: int = DEFAULT_BODY_BUDGET_BYTES
    """Shared by all scrapes for the body bytes each buffers past its free 1 MiB (see
    scrape/budget.py). Never below `body_size_limit_bytes`: the reader enforces it for a given
    value and raises the default to it."""
    api_timeout_seconds: float = 10.0
    """Upper bound on every Kubernetes API call (kubernetes_asyncio has none by default)."""
    leader_election: LeaderElection = LeaderElection()
    pod_autoscalers: PodAutoscalerSettings = PodAutoscalerSettings()
    """Cluster mode settings (issue 14, `config/pod_autoscaler_object.py`)."""
    where: SourceRef | None = field(default=None, compare=False)

    def authorization_for(self, source: MetricSource) -> Authorization | None:
        """The token a source is scraped with: its own, else this DaemonConfig's for an https
        source only. A default must never send a credential in clear text; a source's own
        `authorization` is its own choice."""
        if source.authorization is not None:
            return source.authorization
        return self.authorization if source.protocol == "https" else None


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """Everything the daemon runs from: daemon settings and the policies, in file order."""

    daemon: DaemonConfig = DaemonConfig()
    policies: tuple[Policy, ...] = ()
    files: tuple[str, ...] = ()
