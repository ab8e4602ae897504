"""Bring your own model: a PyTorch MLP (or its state_dict) as a Crystal."""
import numpy as np
import pytest
import torch
from torch import nn

from crystalbench import crystal as cm
from crystalbench.errors import CrystalError
from crystalbench.model.export import crystal_from_torch, load_model

from .conftest import write_torch_file


def trained_mlp(x, y, hidden=(12, 8), steps=30):
    torch.manual_seed(0)
    sizes = (64, *hidden)
    mods = []
    for a, b in zip(sizes, sizes[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*mods, nn.Linear(sizes[-1], 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def outputs(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_imported_mlp_gives_the_same_outputs(tiny_data, tmp_path):
    model = trained_mlp(tiny_data.x_train, tiny_data.y_train)
    c = crystal_from_torch(model, tiny_data, name="mlp")
    expect = outputs(model, tiny_data.x_test)
    np.testing.assert_array_equal(c.reference.outputs[-1], expect)  # the same operations
    np.testing.assert_allclose(c.forward(tiny_data.x_test)[-1], expect, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        hidden = model[:2](torch.from_numpy(tiny_data.x_test)).numpy()
    np.testing.assert_array_equal(c.reference.outputs[0], hidden)
    s = c.summary()
    assert s["sizes"] == [64, 12, 8, 10]
    assert s["hidden_neurons"] == 20 and s["core_neurons"] == 20 and s["frozen_fraction"] == 1.0
    assert s["reference_test_accuracy"] == float((expect.argmax(1) == tiny_data.y_test).mean())
    assert (c.input.offset, c.input.scale) == (0.0, 0.0625)
    cm.save(c, tmp_path)
    np.testing.assert_array_equal(cm.load(tmp_path).layers[1].weights, c.layers[1].weights)


def test_state_dict_import_needs_the_activation_stated_and_sizes(tiny_data):
    model = trained_mlp(tiny_data.x_train, tiny_data.y_train)
    sd = model.state_dict()
    c = crystal_from_torch(sd, tiny_data, sizes=[64, 12, 8, 10], activation="relu")
    np.testing.assert_array_equal(c.reference.outputs[-1], outputs(model, tiny_data.x_test))
    with pytest.raises(CrystalError, match=r"^a state_dict holds only weights: it does not "
                       r"record the activation .* state it with --activation relu"):
        crystal_from_torch(sd, tiny_data, sizes=[64, 12, 8, 10])
    with pytest.raises(CrystalError, match="needs sizes, the layer widths"):
        crystal_from_torch(sd, tiny_data, activation="relu")
    with pytest.raises(CrystalError, match=r"has shape \(12, 64\), sizes say \(13, 64\)"):
        crystal_from_torch(sd, tiny_data, sizes=[64, 13, 8, 10], activation="relu")
    with pytest.raises(CrystalError, match=r"has 3 weight tensors but sizes \[64, 10\] describe 1"):
        crystal_from_torch(sd, tiny_data, sizes=[64, 10], activation="relu")


def test_state_dict_of_other_layers_is_refused(tiny_data):
    sd = nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10)).state_dict()
    with pytest.raises(CrystalError, match=r"entry '1\.weight' \(shape \(8,\)\) is not a Linear weight"):
        crystal_from_torch(sd, tiny_data, sizes=[64, 8, 10], activation="relu")


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Linear(64, 8), nn.Sigmoid(), nn.Linear(8, 10)), r"module 1 is a Sigmoid"),
    (nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 10)), r"hidden Linear 0 is not followed by ReLU"),
    (nn.Sequential(nn.Linear(63, 8), nn.ReLU(), nn.Linear(8, 10)),
     r"takes 63 inputs but data set 'digits' has 64"),
    (nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 9)), r"has 9 outputs but 'digits' has 10"),
    (nn.Sequential(nn.Linear(64, 10), nn.ReLU()), r"the readout\) must not be followed by ReLU"),
])
def test_unsupported_models_are_refused(tiny_data, model, message):
    with pytest.raises(CrystalError, match=message):
        crystal_from_torch(model, tiny_data)


def test_nested_sequential_with_inert_modules_imports(tiny_data, tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, 8), nn.ReLU()), nn.Dropout(0.5),
                          nn.Identity(), nn.Linear(8, 10)).eval()
    path = tmp_path / "m.pt"
    torch.save(model, path)
    c = crystal_from_torch(load_model(path), tiny_data)
    np.testing.assert_array_equal(c.reference.outputs[-1], outputs(model, tiny_data.x_test))


class _Touch:
    """A pickle that would create a file if it were unpickled with weights_only=False."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_model_files_are_loaded_without_running_code(tmp_path):
    tanh = tmp_path / "tanh.pt"
    torch.save(nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10)), tanh)
    with pytest.raises(CrystalError, match=r"tanh\.pt: holds torch\.nn\.modules\.activation\.Tanh, "
                       r"which a PyTorch model may not hold; it was not loaded and nothing in it "
                       r"ran\. crystals import an nn\.Sequential of Linear and ReLU"):
        load_model(tanh)
    evil = tmp_path / "evil.pt"
    marker = tmp_path / "ran"
    torch.save({"w": _Touch(marker)}, evil)
    with pytest.raises(CrystalError, match=r"evil\.pt: holds (builtins|io)\.open, which"):
        load_model(evil)
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"hello\n", r"x\.pt: not a PyTorch model written by torch\.save"),
    (b"", r"x\.pt: not a PyTorch model written by torch\.save"),
    ([1, 2], r"x\.pt: holds a list; crystals import"),
    ({"version": 2, "net": {}, "config_digest": "a"},
     r"holds a dict whose entry 'version' is a int, not a tensor \(a crystalbench checkpoint: "
     r"write its Crystal with `crystalbench export`\)"),
])
def test_files_that_are_not_models_are_named(tmp_path, content, message):
    p = write_torch_file(tmp_path / "x.pt", content)
    with pytest.raises(CrystalError, match=message):
        load_model(p)
    with pytest.raises(CrystalError, match=r"nope\.pt: PyTorch model not found"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(CrystalError, match=r"is a folder; name the PyTorch model file itself"):
        load_model(tmp_path)


def test_a_model_trained_on_raw_pixels_imports_with_its_input_scale(tiny_data):
    raw = tiny_data.rescaled(0.0, 1.0)  # pixels 0..16, as sklearn's load_digits() gives them
    from sklearn.datasets import load_digits

    pixels = load_digits().data[tiny_data.test_index].astype(np.float32)
    np.testing.assert_array_equal(raw.x_test, pixels)
    model = trained_mlp(raw.x_train, raw.y_train, hidden=(16,), steps=60)
    expect = outputs(model, pixels)
    c = crystal_from_torch(model, tiny_data, input_scale=1.0)
    assert (c.input.offset, c.input.scale, c.input.low, c.input.high) == (0.0, 1.0, 0.0, 16.0)
    np.testing.assert_array_equal(c.reference.x, pixels)
    np.testing.assert_array_equal(c.reference.outputs[-1], expect)
    acc = float((expect.argmax(1) == tiny_data.y_test).mean())
    assert c.summary()["reference_test_accuracy"] == acc
    # With the data set's own scaling (pixels / 16) the model sees other inputs.
    wrong = crystal_from_torch(model, tiny_data)
    np.testing.assert_array_equal(wrong.reference.x, pixels / 16)
    assert (wrong.input.offset, wrong.input.scale) == (0.0, 0.0625)
    assert not np.allclose(wrong.reference.outputs[-1], expect, atol=1e-3)
    with pytest.raises(CrystalError, match=r"^input scale 0\.0: must be a finite non-zero number"):
        crystal_from_torch(model, tiny_data, input_scale=0.0)
    with pytest.raises(CrystalError, match=r"^input offset nan: must be a finite number"):
        crystal_from_torch(model, tiny_data, input_offset=float("nan"))
