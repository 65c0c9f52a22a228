"""systemd/autoscalerd.service and systemd/autoscalerd.env.

The unit is read as systemd reads it (sections, repeated keys, backslash continuations),
checked for the notify protocol, the paths the README installs to and the hardening; then,
where `systemd-analyze` exists, `systemd-analyze verify` and the offline security score.

`systemd-analyze verify` insists that ExecStart's binary exists, and /usr/local/bin/
autoscalerd does not on a development machine, so it verifies a copy of the unit whose
ExecStart names the `autoscalerd` of this Python environment; every other line is
unchanged.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoscalerd.cli import build_parser

REPO = Path(__file__).resolve().parents[3]
UNIT = REPO / "systemd" / "autoscalerd.service"
ENV_FILE = REPO / "systemd" / "autoscalerd.env"
BIN = "/usr/local/bin/autoscalerd"
CONF_DIR = "/etc/autoscalerd"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → every value in order (systemd keys may repeat)."""
    text = re.sub(r"\\\n", " ", text)
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {n}: key outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"line {n}: not KEY=VALUE: {raw!r}"
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), f"line {n}: key {key!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def _one(unit: dict[str, dict[str, list[str]]], key: str, section: str = "Service") -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def test_sections(unit: dict[str, dict[str, list[str]]]) -> None:
    assert set(unit) == {"Unit", "Service", "Install"}
    assert _one(unit, "WantedBy", "Install") == "multi-user.target"
    assert "network-online.target" in _one(unit, "After", "Unit")


def test_notify_protocol_and_lifecycle(unit: dict[str, dict[str, list[str]]]) -> None:
    assert _one(unit, "Type") == "notify"
    assert _one(unit, "NotifyAccess") == "main"
    assert _one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert _one(unit, "Restart") == "on-failure"
    assert _one(unit, "RestartSec")
    assert _one(unit, "RestartPreventExitStatus") == "2", "bad config: do not loop"
    assert _one(unit, "TimeoutStopSec") == "10"
    watchdog = _one(unit, "WatchdogSec")
    assert watchdog.endswith("s") and int(watchdog[:-1]) >= 10


def test_exec_start_matches_the_install_paths_and_parses(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    argv = shlex.split(_one(unit, "ExecStart"))
    assert argv[0] == BIN
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run"
    assert args.config == [CONF_DIR]
    assert args.kubeconfig == "${CREDENTIALS_DIRECTORY}/kubeconfig"
    assert not args.in_cluster and not args.insecure_skip_tls_verify
    credential = _one(unit, "LoadCredential")
    assert credential == f"kubeconfig:{CONF_DIR}/kubeconfig"
    assert _one(unit, "EnvironmentFile") == f"-{CONF_DIR}/autoscalerd.env"


def test_kubeconfig_is_not_read_as_a_policy() -> None:
    # -c /etc/autoscalerd reads every *.yaml / *.yml there: the credential and the env file
    # sit in the same directory, so their names must not end in .yaml.
    for name in ("kubeconfig", ENV_FILE.name):
        assert not name.endswith((".yaml", ".yml"))


HARDENING = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "UMask": "0077",
}


@pytest.mark.parametrize(("key", "value"), sorted(HARDENING.items()))
def test_hardening(unit: dict[str, dict[str, list[str]]], key: str, value: str) -> None:
    assert _one(unit, key) == value


def test_system_call_filter(unit: dict[str, dict[str, list[str]]]) -> None:
    filters = unit["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert all(f.startswith("~") for f in filters[1:]), "later lines only deny"


def test_memory_deny_write_execute_is_explained() -> None:
    text = UNIT.read_text()
    before = text[: text.index("MemoryDenyWriteExecute=yes")]
    comment = before[before.rindex("\n\n") if "\n\n" in before else 0 :]
    assert "cffi" in comment and "PR_SET_MDWE" in comment


def test_exec_plugins_get_a_writable_home(unit: dict[str, dict[str, list[str]]]) -> None:
    assert _one(unit, "CacheDirectory") == "autoscalerd"
    env = " ".join(unit["Service"]["Environment"])
    assert "HOME=%C/autoscalerd" in env.split()


def test_env_file_documents_every_run_option() -> None:
    text = ENV_FILE.read_text()
    for line in text.splitlines():
        assert not line.strip() or line.startswith("#"), f"all defaults commented: {line!r}"
    documented = set(re.findall(r"^#(AUTOSCALERD_[A-Z_]+)=", text, re.M))
    cli = (REPO / "autoscalerd" / "cli.py").read_text()
    run_env = set(re.findall(r'_env(?:_flag)?\("([A-Z_]+)"', cli)) - {"STATUS_URL"}
    assert documented == {f"AUTOSCALERD_{n}" for n in run_env} | {"AUTOSCALERD_CONFIG"}


# -- systemd-analyze -------------------------------------------------------------------


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return tool


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an autoscalerd that exists here."""
    exe = shutil.which("autoscalerd") or str(Path(sys.executable).parent / "autoscalerd")
    if not Path(exe).exists():
        pytest.skip("no autoscalerd executable to point ExecStart at")
    text = UNIT.read_text()
    assert text.count(f"ExecStart={BIN} ") == 1
    path = tmp_path / UNIT.name
    path.write_text(text.replace(f"ExecStart={BIN} ", f"ExecStart={exe} "))
    return path


def test_systemd_analyze_verify(verifiable_unit: Path) -> None:
    tool = _analyze()
    done = subprocess.run(
        [tool, "verify", str(verifiable_unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "autoscalerd.service" not in done.stderr, done.stderr


def test_systemd_analyze_security_exposure_is_low(verifiable_unit: Path) -> None:
    tool = _analyze()
    done = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(verifiable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0 and "offline" in done.stderr:
        pytest.skip(f"systemd-analyze security --offline unsupported: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, done.stdout[-500:]
    assert float(match.group(1)) <= 2.0, done.stdout
