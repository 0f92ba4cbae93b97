"""Security of both services, beyond what tests/device_twin/service/test_security.py proves for the
twin: the bind policy, tokens and TLS of ChipHost, tokens compared in constant time and never
logged by either service, limits answered with RESOURCE_EXHAUSTED, and that no network
description, scenario, config or state file can run code (a canary file would appear), the
one exception being a policy named explicitly by dotted path.
"""

from __future__ import annotations

import ast
import base64
import json
import logging
import pickle
import sys
import textwrap
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

import pcmtwin.credentials as credentials
from controller.cli import app
from controller.host.service import ChipHostServer, HostServerOptions
from controller.scenario.loader import ScenarioInvalid, load_scenario
from controller.scenario.sweep import parse_grid
from controller.workloads.network import NetworkDescription
from device_twin.service.server import ServerOptions, TwinServer
from pcmtwin.credentials import ConfigError, make_channel
from pcmtwin.serving import check_bind_policy
from pcmtwin.v1 import host_pb2, host_pb2_grpc, twin_pb2, twin_pb2_grpc
from tests.device_twin.service.conftest import self_signed_cert
from tests.pcmtwin.server_process import ServerProcess
from tests.reliability.host_harness import BASELINE, BASELINE_CHIP, mlp

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-7d1e9b3a5c0f2846"


# --- servers --------------------------------------------------------------------------------
class Servers:
    """A twin and a ChipHost in this process, on loopback, and stubs for the host."""

    def __init__(self, twin_options: dict | None = None, token: str | None = None,
                 host_token: str | None = None, **host_options) -> None:  # fmt: skip
        self.twin = TwinServer(ServerOptions(address="127.0.0.1:0", token=token,
                                             **(twin_options or {})))  # fmt: skip
        self.twin.start()
        host_options.setdefault("twin_token", token)
        self.host = ChipHostServer(HostServerOptions(
            twin_address=self.twin.address, address="127.0.0.1:0", token=host_token,
            **host_options,
        ))  # fmt: skip
        self.host.start()
        self.channel = make_channel(self.host.address, token=host_token,
                                    max_message_bytes=64 * 1024**2)  # fmt: skip
        self.stub = host_pb2_grpc.ChipHostStub(self.channel)

    def load(self, network: NetworkDescription = BASELINE, chip: str = BASELINE_CHIP):
        return self.stub.LoadNetwork(host_pb2.LoadNetworkRequest(
            network=network.to_proto(), chip_config_json=chip), timeout=300)  # fmt: skip

    def status(self) -> host_pb2.ChipStatus:
        return self.stub.GetStatus(host_pb2.GetStatusRequest(), timeout=300)

    def close(self) -> None:
        self.channel.close()
        self.host.stop(grace_s=0)
        self.twin.stop(grace_s=0)


def _code(call, request, **kw) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=300, **kw)
    return err.value.code(), err.value.details() or ""


# --- network exposure -----------------------------------------------------------------------
def test_chip_host_refuses_a_public_bind_without_token_or_tls(tmp_path):
    """ChipHost, like the twin, binds a non-loopback address only with a token, TLS or an
    explicit --insecure; `pcm-twin chip serve` exits with status 2 and says why."""
    with pytest.raises(ConfigError, match="not a loopback address"):
        ChipHostServer(HostServerOptions(twin_address="127.0.0.1:1", address="0.0.0.0:0"))
    with pytest.raises(ConfigError, match="not a loopback address"):
        ChipHostServer(HostServerOptions(twin_address="127.0.0.1:1", address="[::]:0"))
    for ok in ({"token": TOKEN}, {"tls_cert": tmp_path, "tls_key": tmp_path}, {"insecure": True}):
        check_bind_policy(HostServerOptions(twin_address="x:1", address="0.0.0.0:1", **ok))  # type: ignore[arg-type]
    result = CliRunner().invoke(
        app, ["chip", "serve", "--twin", "127.0.0.1:1", "--address", "0.0.0.0:0"],
        env={"PCM_TWIN_TOKEN": None},
    )  # fmt: skip
    assert result.exit_code == 2
    assert "refusing to bind 0.0.0.0:0" in result.output


def test_chip_host_tls(tmp_path):
    """ChipHost over TLS, and itself a TLS client of a TLS twin (--twin-root-cert): a client
    trusting the host's certificate loads a network through both; a plaintext client or one
    trusting another certificate cannot connect."""
    cert, key = self_signed_cert(tmp_path, "host")
    twin_cert, twin_key = self_signed_cert(tmp_path, "twin")
    other, _ = self_signed_cert(tmp_path, "other")
    s = Servers(twin_options={"tls_cert": twin_cert, "tls_key": twin_key}, tls_cert=cert,
                tls_key=key, twin_root_cert=twin_cert)  # fmt: skip
    try:
        with make_channel(s.host.address, root_cert=cert) as ch:
            stub = host_pb2_grpc.ChipHostStub(ch)
            assert stub.LoadNetwork(host_pb2.LoadNetworkRequest(
                network=BASELINE.to_proto(), chip_config_json=BASELINE_CHIP), timeout=300
            ).status.loaded  # fmt: skip
        for bad in (make_channel(s.host.address), make_channel(s.host.address, root_cert=other)):
            with bad:
                code, _ = _code(host_pb2_grpc.ChipHostStub(bad).GetStatus,
                                host_pb2.GetStatusRequest())  # fmt: skip
                assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        s.close()


# --- authentication ---------------------------------------------------------------------------
def test_tokens_are_compared_in_constant_time_by_both_services(monkeypatch):
    """Every bearer token either service receives is checked with hmac.compare_digest."""
    seen: list[bytes] = []
    real = credentials.hmac.compare_digest

    def spy(a, b):
        seen.append(bytes(a))
        return real(a, b)

    monkeypatch.setattr(credentials.hmac, "compare_digest", spy)
    s = Servers(token=TOKEN, host_token=TOKEN)
    try:
        for address, stub_cls, request, method in (
            (s.host.address, host_pb2_grpc.ChipHostStub, host_pb2.GetStatusRequest(), "GetStatus"),
            (s.twin.address, twin_pb2_grpc.CrossbarTwinStub, twin_pb2.ListChipsRequest(),
             "ListChips"),
        ):  # fmt: skip
            seen.clear()
            with make_channel(address, token="guess-1234") as ch:
                code, _ = _code(getattr(stub_cls(ch), method), request)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert seen == [b"Bearer guess-1234"]
            with make_channel(address, token=TOKEN) as ch:
                getattr(stub_cls(ch), method)(request, timeout=300)
            assert seen[-1] == f"Bearer {TOKEN}".encode()
    finally:
        s.close()


def test_chip_host_needs_the_token_and_never_reveals_it(caplog):
    """With a token, ChipHost calls without it or with a wrong one get UNAUTHENTICATED and do
    nothing; a host holding the wrong twin token gets UNAUTHENTICATED from the twin; the
    tokens appear in no message and no log record."""
    caplog.set_level(logging.DEBUG)
    s = Servers(token=TOKEN, host_token=TOKEN)
    try:
        for token in (None, "tok-wrong"):
            with make_channel(s.host.address, token=token) as ch:
                stub = host_pb2_grpc.ChipHostStub(ch)
                code, msg = _code(stub.LoadNetwork, host_pb2.LoadNetworkRequest(
                    network=BASELINE.to_proto(), chip_config_json=BASELINE_CHIP))  # fmt: skip
                assert code == grpc.StatusCode.UNAUTHENTICATED and TOKEN not in msg
        assert not s.status().loaded and s.twin.registry.list_chips() == []
        assert s.load().status.loaded
    finally:
        s.close()
    wrong = Servers(token=TOKEN, host_token=TOKEN, twin_token="tok-not-it")
    try:
        code, msg = _code(wrong.stub.LoadNetwork, host_pb2.LoadNetworkRequest(
            network=BASELINE.to_proto(), chip_config_json=BASELINE_CHIP))  # fmt: skip
        assert code == grpc.StatusCode.UNAUTHENTICATED and "tok-not-it" not in msg
    finally:
        wrong.close()
    assert TOKEN not in caplog.text and "tok-not-it" not in caplog.text


def test_served_processes_never_log_their_tokens(tmp_path):
    """`pcm-twin twin serve` and `pcm-twin chip serve` at DEBUG log level, token from a file
    and from $PCM_TWIN_TOKEN, refused and accepted calls, a network loaded through both, a
    graceful stop: neither log holds the token."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    procs: list[ServerProcess] = []
    try:
        debug, one = ("--log-level", "DEBUG"), {"OMP_NUM_THREADS": "1"}
        procs.append(ServerProcess(tmp_path, *debug, "--token-file", str(token_file), env=one))
        twin_addr = procs[0].address
        procs.append(ServerProcess(tmp_path, *debug, "--twin", twin_addr, group="chip",
                                   env={**one, "PCM_TWIN_TOKEN": TOKEN}))  # fmt: skip
        host_addr = procs[1].address
        with make_channel(host_addr, token=TOKEN) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            deadline = time.monotonic() + 300
            while True:
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1:
                        break
                except grpc.RpcError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            stub = host_pb2_grpc.ChipHostStub(ch)
            assert stub.LoadNetwork(host_pb2.LoadNetworkRequest(
                network=BASELINE.to_proto(), chip_config_json=BASELINE_CHIP), timeout=300).status.loaded  # fmt: skip
        with make_channel(host_addr, token="tok-wrong") as ch:
            code, _ = _code(host_pb2_grpc.ChipHostStub(ch).GetStatus, host_pb2.GetStatusRequest())
            assert code == grpc.StatusCode.UNAUTHENTICATED
        with make_channel(twin_addr, token="tok-wrong") as ch:
            code, _ = _code(
                twin_pb2_grpc.CrossbarTwinStub(ch).ListChips, twin_pb2.ListChipsRequest()
            )
            assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        for p in reversed(procs):
            p.stop()
    logs = "".join(p.log_path.read_text() for p in procs)
    assert "DEBUG" in logs or "listening" in logs  # the logs were written
    assert TOKEN not in logs


# --- limits ---------------------------------------------------------------------------------
def test_twin_refuses_calls_beyond_its_concurrency_limit():
    """Beyond max_concurrent_rpcs calls in progress, the twin answers RESOURCE_EXHAUSTED at
    once; the calls in progress complete."""
    server = TwinServer(ServerOptions(address="127.0.0.1:0", max_concurrent_rpcs=2, max_workers=4))
    server.start()
    entered, release = threading.Semaphore(0), threading.Event()
    real = server.registry.list_chips

    def slow_list_chips():
        entered.release()
        release.wait(120)
        return real()

    server.registry.list_chips = slow_list_chips  # type: ignore[method-assign]
    try:
        with make_channel(server.address) as ch:
            stub = twin_pb2_grpc.CrossbarTwinStub(ch)
            busy = [stub.ListChips.future(twin_pb2.ListChipsRequest(), timeout=300) for _ in "ab"]
            assert entered.acquire(timeout=120) and entered.acquire(timeout=120)
            code, _ = _code(stub.ListChips, twin_pb2.ListChipsRequest())
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            release.set()
            assert [list(f.result().chip_ids) for f in busy] == [[], []]
            server.registry.list_chips = real  # type: ignore[method-assign]
            assert list(stub.ListChips(twin_pb2.ListChipsRequest(), timeout=300).chip_ids) == []
    finally:
        release.set()
        server.stop(grace_s=0)


def test_chip_host_refuses_requests_over_its_message_limit():
    """A LoadNetwork or an Infer larger than ChipHost's --max-message-bytes is refused with
    RESOURCE_EXHAUSTED and changes nothing."""
    s = Servers(max_message_bytes=256 * 1024)
    try:
        s.load()
        before = s.status()
        big = mlp(np.random.default_rng(0), [16, 5000, 4], "big")  # 80 000 weights: 320 kB
        code, msg = _code(s.stub.LoadNetwork, host_pb2.LoadNetworkRequest(network=big.to_proto()))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, msg
        x = np.zeros((5000, 16), np.float32)  # 320 kB
        code, msg = _code(s.stub.Infer, host_pb2.InferRequest(x=_tensor(x)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, msg
        after = s.status()
        assert (after.network, after.last_event_seq, after.inferences) == (
            before.network, before.last_event_seq, before.inferences)  # fmt: skip
    finally:
        s.close()


def _tensor(a: np.ndarray):
    from pcmtwin.codec import numpy_to_tensor

    return numpy_to_tensor(a)


WIDE = mlp(np.random.default_rng(1), [1, 64], "wide")  # 4 bytes in, 256 bytes out per sample


def test_an_infer_whose_answer_would_not_fit_is_refused_before_it_runs():
    """An Infer whose output would exceed the message limit is refused (RESOURCE_EXHAUSTED,
    saying how many samples fit) and changes nothing: no event, no inference, no device time
    or energy; the largest batch that fits is answered."""
    s = Servers(max_message_bytes=128 * 1024)  # responses: 64 KiB after the overhead
    try:
        s.load(WIDE, json.dumps({"tile_rows": 8, "tile_cols": 64}))
        before = s.status()
        code, msg = _code(s.stub.Infer, host_pb2.InferRequest(x=_tensor(np.ones((300, 1),
                                                                                np.float32))))  # fmt: skip
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, msg
        assert "at most 256 samples" in msg, msg  # 64 KiB / 256 bytes per sample
        after = s.status()
        assert (after.inferences, after.last_event_seq, after.sim_time_s, after.twin_energy_pj) == (
            before.inferences, before.last_event_seq, before.sim_time_s, before.twin_energy_pj)  # fmt: skip
        res = s.stub.Infer(host_pb2.InferRequest(x=_tensor(np.ones((256, 1), np.float32))),
                           timeout=300)  # fmt: skip
        assert tuple(res.y.shape) == (256, 64)
    finally:
        s.close()


def test_a_network_over_the_twins_memory_budget_is_refused():
    """ChipHost passes on the twin's limit: a network whose chip would not fit in the twin's
    state budget is refused with RESOURCE_EXHAUSTED, and no chip is left on the twin."""
    s = Servers(twin_options={"state_budget_bytes": 20 * 1024})
    try:
        s.load()  # 2 tiles of 16 x 16: 16 kB of device state
        big = mlp(np.random.default_rng(2), [64, 16, 4], "big")  # 4 + 1 tiles: 40 kB
        code, msg = _code(s.stub.LoadNetwork, host_pb2.LoadNetworkRequest(
            network=big.to_proto(), chip_config_json=BASELINE_CHIP))  # fmt: skip
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "does not fit" in msg
        loaded = s.status()
        assert s.twin.registry.list_chips() == ([loaded.chip_id] if loaded.loaded else [])
    finally:
        s.close()


def test_a_refused_load_keeps_the_running_network():
    """A LoadNetwork the twin refuses leaves the running network loaded and running: same
    network on the same chip (the only one on the twin), still answering Infer."""
    s = Servers(twin_options={"state_budget_bytes": 40 * 1024})
    try:
        s.load()  # 16 kB of device state
        before = s.status()
        code, msg = _code(s.stub.LoadNetwork, host_pb2.LoadNetworkRequest(
            network=mlp(np.random.default_rng(3), [128, 16, 4]).to_proto(),  # 9 tiles: 72 kB
            chip_config_json=BASELINE_CHIP))  # fmt: skip
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "does not fit" in msg, msg
        status = s.status()
        assert status.loaded and status.network == "baseline", "the running network was dropped"
        assert (status.chip_id, status.last_event_seq) == (before.chip_id, before.last_event_seq)
        assert s.twin.registry.list_chips() == [before.chip_id]
        res = s.stub.Infer(host_pb2.InferRequest(x=_tensor(np.ones((2, 16), np.float32))),
                           timeout=300)  # fmt: skip
        assert tuple(res.y.shape) == (2, 4)
    finally:
        s.close()


# --- nothing runs code ------------------------------------------------------------------------
class _Touch:
    """Unpickling creates the canary file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _payloads(canary: Path) -> dict[str, str]:
    """YAML and text payloads that would create ``canary`` if anything evaluated them."""
    pk = base64.b64encode(pickle.dumps(_Touch(canary))).decode()
    return {
        "apply": f"!!python/object/apply:os.system ['touch {canary}']",
        "exec": f"!!python/object/apply:builtins.exec [\"open('{canary}', 'w')\"]",
        "new": f"!!python/object/new:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{canary}']]",
        "name": "!!python/name:os.system",
        "module": "!!python/module:os",
        "binary_pickle": f"!!binary {pk}",
        "import_string": f"\"__import__('os').system('touch {canary}')\"",
        "eval_string": f"\"eval(compile('open(\\\\'{canary}\\\\', \\\\'w\\\\')', 'x', 'exec'))\"",
    }


SCENARIO = textwrap.dedent("""\
    name: {name}
    seed: 1
    duration: {duration}
    evaluation: {{times: [1s]}}
    workload: {{network: digits_mlp}}
    controller:
      policy: {{name: {policy}, params: {{interval_s: {param}}}}}
""")


@pytest.mark.parametrize("where", ["name", "duration", "policy", "param"])
@pytest.mark.parametrize("payload", list(_payloads(Path("/x"))))
def test_a_scenario_never_runs_code(tmp_path, payload, where):
    """YAML python tags, pickles in !!binary, __import__/eval strings anywhere in a scenario:
    `load_scenario` and `pcm-twin validate` refuse them or keep them as plain data, and the
    canary file is never created."""
    canary = tmp_path / "canary"
    fields = {"name": "safe", "duration": "1d", "policy": "threshold", "param": "6h"}
    fields[where] = _payloads(canary)[payload]
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO.format(**fields))
    try:
        loaded = load_scenario(path)
    except ScenarioInvalid as exc:
        assert exc.issues
        accepted = False
    else:  # accepted: the payload was a plain string, and stays one
        assert where == "name" and isinstance(loaded.scenario.name, str)
        accepted = True
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert (result.exit_code == 0) == accepted, result.output
    assert not canary.exists()


def test_sweep_grid_values_never_run_code(tmp_path):
    """`pcm-twin sweep --grid` values are YAML scalars read safely: tags are refused."""
    canary = tmp_path / "canary"
    for payload in _payloads(canary).values():
        try:
            axis = parse_grid(f"seed={payload}")
        except Exception:
            continue
        assert all(isinstance(v, str | bytes | int | float) for v in axis.values)
    assert not canary.exists()


def _hostile_network_json(canary: Path) -> list[str]:
    pk = base64.b64encode(pickle.dumps(_Touch(canary))).decode()
    good = json.loads(BASELINE.model_dump_json())
    variants = []
    v = json.loads(json.dumps(good))
    v["layers"][0]["weight"] = {"dtype": "uint8", "shape": [len(base64.b64decode(pk))], "data": pk}
    variants.append(v)  # pickle bytes as tensor data
    v = json.loads(json.dumps(good))
    v["layers"][0]["name"] = f"__import__('os').system('touch {canary}')"
    variants.append(v)
    v = json.loads(json.dumps(good))
    v["layers"][1]["name"] = "!!python/object/apply:eval"  # no '.': a valid layer name
    v["metadata"] = {"__reduce__": pk, "!!python/name:os.system": f"touch {canary}"}
    variants.append(v)  # valid: hostile names are plain strings
    v = json.loads(json.dumps(good))
    v["layers"][0]["kind"] = "os.system"
    variants.append(v)
    v = json.loads(json.dumps(good))
    v["__class__"] = "os.system"
    variants.append(v)
    v = json.loads(json.dumps(good))
    v["layers"][0]["weight"] = {"py/reduce": [{"py/function": "os.system"}, [f"touch {canary}"]]}
    variants.append(v)  # jsonpickle-style
    return [json.dumps(x) for x in variants]


def test_a_network_description_never_runs_code(tmp_path):
    """Network descriptions with pickles in tensor data, python tags and __import__ strings
    in names, metadata or kinds are refused or kept as plain data, as JSON and through
    ChipHost's LoadNetwork; the canary file is never created."""
    canary = tmp_path / "canary"
    accepted = 0
    protos = []
    for text in _hostile_network_json(canary):
        try:
            desc = NetworkDescription.model_validate_json(text)
        except ValueError:
            continue
        accepted += 1
        assert "!!python/object/apply:eval" in [la.name for la in desc.layers]
        protos.append(desc.to_proto())
    assert accepted == 1  # only the one with hostile strings in names and metadata
    raw = BASELINE.to_proto()
    payload = pickle.dumps(_Touch(canary))
    payload += b"\0" * (-len(payload) % 4)
    raw.layers[0].linear.weight.data = payload
    raw.layers[0].linear.weight.shape[:] = [len(payload) // 4]
    protos.append(raw)
    s = Servers()
    try:
        codes = []
        for msg in protos:
            try:
                s.stub.LoadNetwork(host_pb2.LoadNetworkRequest(network=msg,
                                                               chip_config_json=BASELINE_CHIP),
                                   timeout=300)  # fmt: skip
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
        assert codes == ["OK", "INVALID_ARGUMENT"]
    finally:
        s.close()
    assert not canary.exists()


def test_a_chip_config_never_runs_code(tmp_path):
    """CreateChip configs with YAML tags, pickles and __import__ strings are refused."""
    canary = tmp_path / "canary"
    pk = base64.b64encode(pickle.dumps(_Touch(canary))).decode()
    configs = [*_payloads(canary).values(), json.dumps({"seed": pk}),
               json.dumps({"device": {"__reduce__": pk}}), pickle.dumps(_Touch(canary)).hex(),
               json.dumps({"py/object": "os.system"})]  # fmt: skip
    server = TwinServer(ServerOptions(address="127.0.0.1:0"))
    server.start()
    try:
        with make_channel(server.address) as ch:
            stub = twin_pb2_grpc.CrossbarTwinStub(ch)
            for config in configs:
                code, _ = _code(stub.CreateChip, twin_pb2.CreateChipRequest(config_json=config))
                assert code == grpc.StatusCode.INVALID_ARGUMENT, config
    finally:
        server.stop(grace_s=0)
    assert not canary.exists()


def test_a_state_directory_never_runs_code(tmp_path):
    """A state directory whose snapshot and log hold pickles is refused or ignored at
    restore; nothing in it is unpickled."""
    canary = tmp_path / "canary"
    state = tmp_path / "state"
    state.mkdir()
    (state / "snapshot.ptw").write_bytes(pickle.dumps(_Touch(canary)))
    (state / "wal-00000001.log").write_bytes(pickle.dumps(_Touch(canary)) * 3)
    server = TwinServer(ServerOptions(address="127.0.0.1:0", state_dir=state))
    try:
        server.start()
    except Exception:  # refusing a corrupt state directory is fine
        pass
    else:
        assert server.registry.list_chips() == []
    finally:
        server.stop(grace_s=0)
    assert not canary.exists()


def test_only_a_policy_named_by_dotted_path_runs_code(tmp_path, monkeypatch):
    """The one way in: a policy named by dotted path. ChipHost refuses it (PERMISSION_DENIED)
    without importing anything unless started with --allow-user-policies; a scenario naming
    it imports its module (the canary appears)."""
    canary = tmp_path / "canary"
    monkeypatch.setenv("PCM_TWIN_CANARY", str(canary))
    monkeypatch.delitem(sys.modules, "tests.reliability.canary_policy", raising=False)
    spec = host_pb2.PolicySpec(name="tests.reliability.canary_policy:Canary")
    s = Servers()
    try:
        code, msg = _code(s.stub.SetPolicy, host_pb2.SetPolicyRequest(policy=spec))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "--allow-user-policies" in msg
        code, _ = _code(s.stub.LoadNetwork, host_pb2.LoadNetworkRequest(
            network=BASELINE.to_proto(), chip_config_json=BASELINE_CHIP, policy=spec))  # fmt: skip
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert not canary.exists() and "tests.reliability.canary_policy" not in sys.modules
    finally:
        s.close()
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO.format(name="canary", duration="1d", param="6h",
                                    policy="tests.reliability.canary_policy:Canary")
                    .replace("params: {interval_s: 6h}", "params: {}"))  # fmt: skip
    load_scenario(path)
    assert canary.exists()


#: What no module of the services, the controller or the CLI may call or import: everything
#: that turns data into code. The policy loader alone imports modules (by dotted path).
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRS = {("pickle", "loads"), ("pickle", "load"), ("marshal", "loads"),
                   ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "load_all"),
                   ("torch", "load"), ("importlib", "import_module"), ("dill", "loads")}  # fmt: skip
FORBIDDEN_MODULES = {"pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
POLICY_LOADER = Path("controller/firmware/policies/__init__.py")


def _safe_loader(tree: ast.Module, loader: ast.expr) -> bool:
    """A ``Loader=`` argument is yaml's SafeLoader (or CSafeLoader), or a class of the same
    module whose bases are (transitively) one of them."""
    safe = {"SafeLoader", "CSafeLoader"}
    name = loader.attr if isinstance(loader, ast.Attribute) else getattr(loader, "id", None)
    if isinstance(loader, ast.Attribute) and ast.unparse(loader.value) == "yaml":
        return name in safe
    classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    seen: set[str] = set()
    while name in classes and name not in seen:
        seen.add(name)
        bases = classes[name].bases
        if any(ast.unparse(b) in {f"yaml.{s}" for s in safe} for b in bases):
            return True
        name = next((b.id for b in bases if isinstance(b, ast.Name)), None)
    return False


def test_no_service_module_turns_data_into_code():
    """No module under controller/, device_twin/ or pcmtwin/ calls eval/exec/compile/
    __import__, unpickles, uses an unsafe YAML loader, torch.load or numpy allow_pickle;
    only the policy loader imports modules by name."""
    found = []
    for root in ("controller", "device_twin", "pcmtwin"):
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO)
            tree = ast.parse(path.read_text(), str(rel))
            for node in ast.walk(tree):
                where = f"{rel}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                        node.module or ""]  # fmt: skip
                    found += [f"{where} imports {n}" for n in names
                              if n.split(".")[0] in FORBIDDEN_MODULES]  # fmt: skip
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
                    found.append(f"{where} calls {f.id}")
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                    pair = (f.value.id, f.attr)
                    if pair in FORBIDDEN_ATTRS and rel != POLICY_LOADER:
                        found.append(f"{where} calls {'.'.join(pair)}")
                    if pair == ("yaml", "load"):
                        loader = [k for k in node.keywords if k.arg == "Loader"]
                        if not loader or not _safe_loader(tree, loader[0].value):
                            found.append(f"{where} calls yaml.load without SafeLoader")
                    if f.attr == "load" and any(k.arg == "allow_pickle" for k in node.keywords):
                        found.append(f"{where} loads with allow_pickle")
                loads_code = ("exec_module", "spec_from_file_location")
                if isinstance(f, ast.Attribute) and f.attr in loads_code and rel != POLICY_LOADER:
                    found.append(f"{where} calls {f.attr}")
    assert found == []
