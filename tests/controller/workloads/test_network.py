"""The declarative network description: conversions, and rejection of malformed networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from controller.workloads.network import NetworkDescription
from controller.workloads.tensor import Tensor
from controller.workloads.zoo import paper_cnn
from pcmtwin.v1 import network_pb2


def _with_bn() -> nn.Sequential:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
        nn.MaxPool2d(2, stride=1, ceil_mode=True), nn.Flatten(), nn.Linear(36, 10),
        nn.LogSoftmax(dim=1),
    )  # fmt: skip
    m[1].running_mean.uniform_(-1, 1)
    m[1].running_var.uniform_(0.5, 2)
    return m.eval()


def test_paper_cnn_has_2856_crossbar_weights():
    """The paper's network holds 72 + 864 + 1,920 = 2,856 weights and maps (1, 28, 28) to 10."""
    desc = NetworkDescription.from_torch(paper_cnn(), (1, 28, 28))
    assert desc.n_analog_weights() == 2856
    assert [s for s in desc.shapes()][5:7] == [(12, 4, 4), (192,)]
    assert desc.output_shape == (10,)


def test_torch_round_trip_gives_the_same_outputs():
    """A described network rebuilt in torch computes what the original computes."""
    model = _with_bn()
    desc = NetworkDescription.from_torch(model, (1, 8, 8), name="bn")
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(desc.to_torch()(x), model(x))
    assert desc.shapes()[-1] == (10,)


def test_proto_and_json_round_trips_are_exact():
    """A description survives the proto message and JSON unchanged."""
    desc = NetworkDescription.from_torch(_with_bn(), (1, 8, 8), metadata={"k": "v"})
    wire = desc.to_proto().SerializeToString()
    msg = network_pb2.NetworkDescription.FromString(wire)
    assert NetworkDescription.from_proto(msg) == desc
    assert NetworkDescription.model_validate_json(desc.model_dump_json()) == desc


def test_tensor_from_bytes_or_list():
    """A tensor is dtype + shape + little-endian bytes or a list, and rejects a size mismatch."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = Tensor.from_array(a)
    assert np.array_equal(t.to_numpy(), a)
    assert np.array_equal(
        Tensor(dtype="float32", shape=(2, 3), values=list(range(6))).to_numpy(), a
    )
    assert t.data == a.astype("<f4").tobytes()
    with pytest.raises(ValidationError, match="bytes"):
        Tensor(dtype="float32", shape=(2, 3), data=b"\x00" * 20)
    with pytest.raises(ValidationError, match="NaN"):
        Tensor.from_array(np.array([np.nan], np.float32))


def _paper_dict() -> dict:
    return NetworkDescription.from_torch(paper_cnn(), (1, 28, 28)).model_dump()


def test_unknown_layer_is_rejected_naming_it():
    """An unknown layer kind is refused with the layer's index and name."""
    d = _paper_dict()
    d["layers"][2] = {"name": "drop", "kind": "Dropout", "p": 0.5}
    with pytest.raises(ValidationError, match=r"layer 2 \('drop'\): unknown layer kind 'Dropout'"):
        NetworkDescription.model_validate(d)


def test_wrong_weight_shape_is_rejected_naming_the_layer():
    """A weight of the wrong shape is refused with the layer's index, name and both shapes."""
    d = _paper_dict()
    d["layers"][3]["weight"] = Tensor.from_array(np.zeros((12, 8, 2, 2), np.float32)).model_dump()
    with pytest.raises(ValidationError, match=r"layer 3 \('conv2', Conv2d\).*\(12, 8, 3, 3\)"):
        NetworkDescription.model_validate(d)


def test_inconsistent_chain_is_rejected_naming_the_layer():
    """A layer that does not fit its input (here: pooling removed) is named in the error."""
    d = _paper_dict()
    del d["layers"][5]  # pool2: the flattened features no longer match fc's 192 inputs
    with pytest.raises(ValidationError, match=r"layer 6 \('fc', Linear\): expects \(192,\)"):
        NetworkDescription.model_validate(d)
    d = _paper_dict()
    d["layers"][3]["in_channels"] = 4
    d["layers"][3]["weight"] = Tensor.from_array(np.zeros((12, 4, 3, 3), np.float32)).model_dump()
    with pytest.raises(
        ValidationError, match=r"layer 3 \('conv2', Conv2d\): expects 4 input channels"
    ):
        NetworkDescription.model_validate(d)


def test_malformed_proto_is_rejected_naming_the_layer():
    """A proto layer with no kind, or a duplicate name, is refused with the layer named."""
    msg = NetworkDescription.from_torch(paper_cnn(), (1, 28, 28)).to_proto()
    msg.layers[4].ClearField("relu")
    with pytest.raises(ValidationError, match=r"layer 4 \('relu2'\): unknown layer kind None"):
        NetworkDescription.from_proto(msg)
    msg = NetworkDescription.from_torch(paper_cnn(), (1, 28, 28)).to_proto()
    msg.layers[1].name = "conv1"
    with pytest.raises(ValidationError, match=r"layer 1 \('conv1'\): name already used by layer 0"):
        NetworkDescription.from_proto(msg)


def test_unsupported_torch_module_is_rejected_naming_it():
    """from_torch refuses a module it cannot describe, naming it."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.Dropout())
    with pytest.raises(ValueError, match=r"layer 2 \('2', Dropout\): unsupported"):
        NetworkDescription.from_torch(model, (4,))


def test_with_weights_revalidates_shapes():
    """Replacing a layer's weights keeps the description valid or refuses the replacement."""
    desc = NetworkDescription.from_torch(paper_cnn(), (1, 28, 28))
    w = np.ones((10, 192), np.float32)
    assert np.array_equal(desc.with_weights({"fc": w}).layers[7].weight.to_numpy(), w)
    with pytest.raises(ValidationError, match="fc"):
        desc.with_weights({"fc": np.ones((10, 191), np.float32)})


def _conv(name: str, c_in: int, c_out: int, k: int = 3, pad: int = 1) -> dict:
    w = Tensor.from_array(np.zeros((c_out, c_in, k, k), np.float32))
    return {"kind": "Conv2d", "name": name, "in_channels": c_in, "out_channels": c_out,
            "kernel_size": k, "padding": pad, "weight": w}  # fmt: skip


def _residual(body: list, shortcut: list | None = None, name: str = "block") -> dict:
    return {"kind": "Residual", "name": name, "body": body, "shortcut": shortcut or []}


def test_residual_blocks_are_validated_like_the_network():
    """Inside a residual block, errors name the block and the inner layer; the body and the
    shortcut must give the same shape; names are unique across the whole network."""

    def desc(layers: list) -> NetworkDescription:
        return NetworkDescription(input_shape=(2, 6, 6), layers=layers)

    ok = desc([_residual([_conv("c1", 2, 4), {"kind": "ReLU", "name": "r"}],
                         [_conv("proj", 2, 4, 1, 0)])])  # fmt: skip
    assert ok.output_shape == (4, 6, 6)
    assert [la.name for la in ok.walk()] == ["block", "c1", "r", "proj"]
    assert [la.name for _, la in ok.analog_layers()] == ["c1", "proj"]
    with pytest.raises(ValidationError, match=r"layer 0 \('block', Residual\): body gives "
                       r"\(4, 6, 6\) but shortcut gives \(2, 6, 6\)"):  # fmt: skip
        desc([_residual([_conv("c1", 2, 4)])])
    with pytest.raises(ValidationError, match=r"body: layer 1 \('c2', Conv2d\): expects 2 input"):
        desc([_residual([_conv("c1", 2, 4), _conv("c2", 2, 2)])])
    with pytest.raises(ValidationError, match=r"name already used"):
        desc([_residual([_conv("c1", 2, 2)]), _conv("c1", 2, 2)])


def test_residual_blocks_travel_as_protos_and_nest_only_so_deep():
    """A block survives the proto round trip; a proto nesting blocks deeper than
    MAX_NESTING is refused with a message, not a stack overflow."""
    block = _residual([_conv("c1", 2, 2), {"kind": "ReLU", "name": "r"}])
    d = NetworkDescription(input_shape=(2, 4, 4), layers=[block, {"kind": "ReLU", "name": "out"}])
    assert NetworkDescription.from_proto(d.to_proto()) == d
    msg = network_pb2.NetworkDescription(input_shape=[2, 4, 4])
    inner = msg.layers.add(name="b0").residual
    for i in range(1, 12):
        inner = inner.body.add(name=f"b{i}").residual
    inner.body.add(name="r").relu.SetInParent()
    with pytest.raises(ValueError, match="nest deeper than 8"):
        NetworkDescription.from_proto(msg)


def test_with_weights_reaches_into_residual_blocks():
    """Replacing an analog layer's weights inside a block keeps the rest and re-validates."""
    d = NetworkDescription(input_shape=(2, 4, 4), layers=[_residual([_conv("c1", 2, 2)])])
    w = np.ones((2, 2, 3, 3), np.float32)
    assert np.array_equal(d.with_weights({"c1": w}).layers[0].body[0].weight.to_numpy(), w)
    with pytest.raises(ValueError, match="not an analog layer"):
        d.with_weights({"block": w})
    with pytest.raises(ValidationError):
        d.with_weights({"c1": np.ones((2, 2, 1, 1), np.float32)})
