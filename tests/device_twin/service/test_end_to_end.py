"""Against a real server process on loopback, TwinClient gives exactly what the in-process core
gives: same seed, same calls, bit-identical results."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from controller.rpc.client import TwinClient, TwinRpcError
from device_twin import Array, Chip, PulseKind
from device_twin.errors import InvalidArgument
from device_twin.unroll import ConvGeometry
from pcmtwin.codec import numpy_to_tensor
from pcmtwin.credentials import make_channel
from pcmtwin.v1 import twin_pb2, twin_pb2_grpc
from tests.device_twin.service.conftest import (
    ServerProcess,
    assert_same_result,
    random_targets,
    small_config,
    start_inprocess,
)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("e2e"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("session", [False, True], ids=["unary", "session"])
def test_every_operation_matches_the_in_process_core(twin, session):
    """Program, pulses, reads, probes and MVMs over gRPC, unary or in a session, are
    bit-identical to the core's."""
    cfg = small_config()
    rows, cols = cfg.tile_rows, cfg.tile_cols
    local = Chip(cfg)
    rng = np.random.default_rng(5)
    with twin.client(session=session) as client:
        chip_id = client.create_chip(cfg, "e2e-ops")
        g = [random_targets(rng, (rows, cols)) for _ in range(4)]
        devices = rng.choice(rows * cols, 40, replace=False)
        x = rng.standard_normal((7, rows)).astype(np.float32)
        act = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)  # 18 unrolled columns
        geometry = ConvGeometry((3, 3), padding=(1, 1))
        calls = [
            ("program", (0, g[0], g[1], 1.0)),
            ("program", (1, g[2], g[3], 2.0)),
            ("program_devices", (0, Array.NEG, devices[:10], g[0].ravel()[:10], 30.0)),
            ("apply_pulses", (0, Array.POS, devices, PulseKind.SET, 3, 60.0)),
            (
                "apply_pulses",
                (0, Array.NEG, devices[:5], PulseKind.SET, np.arange(1, 6, dtype=np.int32), 61.0),
            ),  # fmt: skip
            ("apply_pulses", (1, Array.POS, devices[:8], PulseKind.RESET, 1, 62.0)),
            ("read_devices", (0, Array.POS, devices, 100.0)),
            ("read_devices", (1, Array.NEG, None, 120.0)),
            ("probe", (0, np.arange(rows), Array.POS, 3600.0)),
            ("probe", (0, np.array([3, 1, 7]), Array.NEG, 3601.0)),
            ("probe", (1, np.arange(5), Array.DIFF, 3602.0)),
            ("probe", (1, np.array([0, 2]), Array.BOTH, 3603.0)),
            ("probe", (1, np.array([1, 2]), Array.BOTH, 3603.5, 3, 4)),
            (
                "read_devices",
                (0, Array.BOTH, np.concatenate([devices, rows * cols + devices]), 3604.0),
            ),
            (
                "program_devices",
                (1, Array.BOTH, rows * cols + devices[:4], g[1].ravel()[:4], 3605.0),
            ),
            ("read_devices", (1, Array.BOTH, None, 3606.0)),
            ("mvm", (0, x, 7200.0)),
            ("mvm", (0, x, 7200.0)),  # same instant: same weight realisation, new output noise
            ("mvm", (0, x[:, :10].astype(np.float64), 7300.0, 4, 3, 9)),
            ("mvm", (1, x[:2], 86400.0, 0, 8)),
            ("conv_mvm", (0, act, 90000.0, geometry, 2, 14, 5, 3, 6, 20)),
            ("conv_mvm", (1, act.astype(np.float64), 90000.0, geometry, 0, 18)),
        ]
        for name, args in calls:
            remote = getattr(client, name)(chip_id, *args)
            assert_same_result(remote, getattr(local, name)(*args))
        info = client.chip_info(chip_id)
        assert (info.op_counter, info.now_s) == (local.op_counter, local.now_s)
        assert info.programmed_tiles == (0, 1)
        assert client.energy_ledger(chip_id) == local.ledger.to_dict()
        state = client.snapshot(chip_id)
        for t in (0, 1):
            assert state.g_prog_us[t].tobytes() == local.g_prog_us[t].tobytes()
            assert state.nu[t].tobytes() == local.nu[t].tobytes()
            assert state.t_write_s[t].tobytes() == local.t_write_s[t].tobytes()
        client.delete_chip(chip_id)
        assert chip_id not in client.list_chips()
        assert client.session_fallbacks == 0


def test_operations_on_several_pairs_match_the_in_process_core(twin):
    """A chip with two pairs per weight: every operation names its pair over gRPC and
    answers bit-identically to the core; an unknown pair is INVALID_ARGUMENT."""
    cfg = small_config(pairs_per_weight=2, significance_factor=2.5)
    rows, cols = cfg.tile_rows, cfg.tile_cols
    local = Chip(cfg)
    rng = np.random.default_rng(8)
    with twin.client() as client:
        chip_id = client.create_chip(cfg, "e2e-pairs")
        g = [random_targets(rng, (rows, cols), 12.0) for _ in range(4)]
        dev = rng.choice(rows * cols, 12, replace=False)
        x = rng.standard_normal((3, rows)).astype(np.float32)
        calls = [
            ("program", (0, g[0], g[1], 1.0), {"pair": 0}),
            ("program", (0, g[2], g[3], 2.0), {"pair": 1}),
            ("program_devices", (0, Array.POS, dev, g[0].ravel()[:12], 3.0), {"pair": 1}),
            ("apply_pulses", (0, Array.NEG, dev, PulseKind.SET, 2, 4.0), {"pair": 1}),
            ("read_devices", (0, Array.BOTH, None, 60.0), {"pair": 1}),
            ("read_devices", (0, Array.POS, dev, 61.0), {"pair": 0}),
            ("probe", (0, np.arange(rows), Array.DIFF, 62.0), {"pair": 1}),
            ("mvm", (0, x, 3600.0), {}),
        ]
        for name, args, kw in calls:
            assert_same_result(getattr(client, name)(chip_id, *args, **kw),
                               getattr(local, name)(*args, **kw))  # fmt: skip
        with pytest.raises(InvalidArgument, match="pair 2 does not exist"):
            client.read_devices(chip_id, 0, Array.POS, None, 7200.0, pair=2)
        state = client.snapshot(chip_id)
        assert state.g_prog_us[0].tobytes() == local.g_prog_us[0].tobytes()
        client.delete_chip(chip_id)


@pytest.mark.parametrize("family", ["pcm_hermes", "reram_wan2022", "reram_cmo"])
def test_a_chip_of_every_family_travels_as_json_and_matches_the_core(twin, family):
    """CreateChip takes a family's config as JSON; its chip answers bit-identically to the
    in-process core, failed devices included."""
    cfg = small_config(device={"family": family})
    local = Chip(cfg)
    rows, cols = cfg.tile_rows, cfg.tile_cols
    top = np.full((rows, cols), cfg.g_max_us, np.float32)  # beyond many devices' own bound
    with twin.client() as client:
        chip_id = client.create_chip(cfg, f"e2e-{family}")
        assert client.chip_info(chip_id).config == cfg
        for name, args in [("program", (0, top, top * 0.5, 1.0)),
                           ("read_devices", (0, Array.BOTH, None, 3600.0)),
                           ("apply_pulses", (0, Array.POS, np.arange(9), PulseKind.SET, 2, 3601.0)),
                           ("probe", (0, np.arange(rows), Array.DIFF, 3602.0))]:  # fmt: skip
            remote = getattr(client, name)(chip_id, *args)
            assert_same_result(remote, getattr(local, name)(*args))
            if name == "program":
                assert remote.failed.size > 0
        client.delete_chip(chip_id)


def test_standard_health_client_sees_serving(twin):
    """A plain grpc.health.v1 client sees SERVING, for the server and for CrossbarTwin."""
    with make_channel(twin.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "pcmtwin.v1.CrossbarTwin"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=60)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(twin):
    """Server reflection lists pcmtwin.v1.CrossbarTwin and serves its file descriptor."""
    with make_channel(twin.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="pcmtwin.v1.CrossbarTwin"
            ),
        ]
        listed, files = list(stub.ServerReflectionInfo(iter(requests), timeout=60))
    names = {s.name for s in listed.list_services_response.service}
    assert {"pcmtwin.v1.CrossbarTwin", "grpc.health.v1.Health"} <= names
    assert files.file_descriptor_response.file_descriptor_proto


def test_large_mvm_batches_are_split_to_fit_the_message_limit(tmp_path):
    """A batch too large for one message is split by the client into MVMs at the same at_s."""
    limit = 256 * 1024
    server = start_inprocess(max_message_bytes=limit)
    cfg = small_config(tile_rows=64, tile_cols=200)
    local = Chip(cfg)
    rng = np.random.default_rng(2)
    g = [random_targets(rng, (64, 200)) for _ in range(2)]
    x = rng.standard_normal((1000, 64)).astype(np.float32)  # 800 kB of outputs
    try:
        with TwinClient(server.address, max_message_bytes=limit) as client:
            chip_id = client.create_chip(cfg)
            client.program(chip_id, 0, g[0], g[1], 1.0)
            local.program(0, g[0], g[1], 1.0)
            split = client.mvm_split(chip_id, x)
            assert len(split) > 1
            remote = client.mvm(chip_id, 0, x, 50.0)
            parts = [local.mvm(0, x[b0:b1], 50.0) for b0, b1 in split]
            assert remote.values.tobytes() == np.concatenate([p.values for p in parts]).tobytes()
            assert remote.energy_pj == sum(p.energy_pj for p in parts)
            assert client.energy_ledger(chip_id)["mvm"]["calls"] == len(split)
            # the same batch in one request is refused by the server
            with (
                make_channel(server.address, max_message_bytes=8 * limit) as channel,
                pytest.raises(grpc.RpcError) as err,
            ):
                request = twin_pb2.MvmRequest(
                    chip_id=chip_id, tile=0, x=numpy_to_tensor(x), at_s=51.0
                )
                twin_pb2_grpc.CrossbarTwinStub(channel).Mvm(request, timeout=60)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.stop()


def test_client_deadline_is_enforced(twin):
    """A call that cannot finish within the client's deadline fails with DEADLINE_EXCEEDED."""
    with (
        TwinClient(twin.address, timeout_s=1e-9, retries=0) as client,
        pytest.raises(TwinRpcError) as err,
    ):
        client.list_chips()
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED.name


def test_concurrent_clients_never_see_torn_state():
    """Clients hammering one chip from threads lose no operation, and a write lands whole."""
    server = start_inprocess()
    cfg = small_config()
    devices = np.arange(0, cfg.tile_rows * cfg.tile_cols, 3)
    n_threads, n_calls = 4, 15
    try:
        with TwinClient(server.address) as admin:
            chip_id = admin.create_chip(cfg)
            g = np.full((cfg.tile_rows, cfg.tile_cols), 10.0, np.float32)
            admin.program(chip_id, 0, g, g, 1.0)

        def hammer(k: int) -> None:
            # even threads write 1 uS, odd ones 24 uS: > 10 sigma of programming noise apart
            target_us = np.full(devices.size, 24.0 if k % 2 else 1.0, np.float32)
            with TwinClient(server.address) as client:
                for _ in range(n_calls):
                    client.program_devices(chip_id, 0, Array.POS, devices, target_us, 5.0)
                    g_us = client.read_devices(chip_id, 0, Array.POS, devices, 5.0).values
                    high = g_us > 12.5
                    assert high.all() or not high.any(), "a read saw two writes mixed"

        errors: list[BaseException] = []

        def run(k: int) -> None:
            try:
                hammer(k)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        with TwinClient(server.address) as admin:
            info = admin.chip_info(chip_id)
            assert info.op_counter == 1 + 2 * n_threads * n_calls
            ledger = admin.energy_ledger(chip_id)
            assert ledger["program"]["calls"] == 1 + n_threads * n_calls
            assert ledger["read_devices"]["calls"] == n_threads * n_calls
    finally:
        server.stop()


def test_client_offers_the_registry_calls_with_the_same_arguments():
    """TwinClient has every ChipRegistry call, with the same parameter names in order."""
    import inspect

    from device_twin.registry import ChipRegistry

    names = ("create_chip", "delete_chip", "list_chips", "chip_info", "energy_ledger",
             "program", "program_devices", "apply_pulses", "read_devices", "probe", "mvm", "conv_mvm")  # fmt: skip
    for name in names:
        ours = list(inspect.signature(getattr(TwinClient, name)).parameters)
        theirs = list(inspect.signature(getattr(ChipRegistry, name)).parameters)
        assert ours == theirs, name
