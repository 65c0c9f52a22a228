"""Every exception the project raises on purpose derives from `AutoscalerdError`."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscalerd.config.load import load_config
from autoscalerd.config.problems import ConfigErrors
from autoscalerd.errors import AutoscalerdError
from autoscalerd.kube.errors import (
    KubeConfigError,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    KubeTooManyRequests,
    KubeUnauthorized,
    KubeUnavailable,
)
from autoscalerd.kube.selectors import SelectorError
from autoscalerd.scrape.connection import HandshakeDisconnected
from autoscalerd.scrape.errors import ScrapeError
from autoscalerd.scrape.http11 import ClientClosed
from autoscalerd.scrape.parser import ParseError
from autoscalerd.scrape.response_parser import (
    BodyTooLarge,
    HTTPProtocolError,
    ServerDisconnected,
    TruncatedResponse,
)
from autoscalerd.simulate import TraceError


@pytest.mark.parametrize(
    "error",
    [
        ConfigErrors,
        ParseError,
        ScrapeError,
        KubeError,
        KubeConfigError,
        KubeNotFound,
        KubeConflict,
        KubeForbidden,
        KubeUnauthorized,
        KubeInvalid,
        KubeTooManyRequests,
        KubeUnavailable,
        SelectorError,
        TraceError,
        HTTPProtocolError,
        BodyTooLarge,
        ServerDisconnected,
        TruncatedResponse,
        HandshakeDisconnected,
        ClientClosed,
    ],
)
def test_error_derives_from_the_root(error: type[Exception]) -> None:
    assert issubclass(error, AutoscalerdError)


@pytest.mark.parametrize("error", [ParseError, SelectorError])
def test_value_errors_stay_value_errors(error: type[Exception]) -> None:
    """Callers that catch ValueError (the standard "bad text" error) still catch these."""
    assert issubclass(error, ValueError)


def test_the_root_catches_a_bad_policy_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("apiVersion: autoscaling.aibrix.ai/v1alpha1\nkind: PodAutoscaler\n")
    with pytest.raises(AutoscalerdError) as info:
        load_config([str(bad)])
    assert isinstance(info.value, ConfigErrors)
    assert "metadata is missing" in str(info.value)


def test_the_root_is_not_a_catch_all() -> None:
    assert not issubclass(TypeError, AutoscalerdError)
    assert AutoscalerdError.__bases__ == (Exception,)
