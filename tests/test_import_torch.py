import numpy as np
import pytest
import torch
from torch import nn

from crystalbench import crystal as cm
from crystalbench.crystal import CrystalError
from crystalbench.model.export import crystal_from_torch


def trained_mlp(ds):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def test_imported_mlp_gives_the_same_outputs(tiny_data, tmp_path):
    model = trained_mlp(tiny_data)
    c = crystal_from_torch(model, tiny_data, name="mlp")
    with torch.no_grad():
        expect = model(torch.from_numpy(tiny_data.x_test)).numpy()
    np.testing.assert_allclose(c.forward(tiny_data.x_test)[-1], expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c.reference.outputs[-1], expect, rtol=1e-6, atol=1e-6)
    s = c.summary()
    assert s["hidden_neurons"] == 20 and s["core_neurons"] == 20 and s["frozen_fraction"] == 1.0
    cm.save(c, tmp_path)
    np.testing.assert_array_equal(cm.load(tmp_path).layers[1].weights, c.layers[1].weights)


def test_state_dict_import_needs_and_checks_sizes(tiny_data):
    model = trained_mlp(tiny_data)
    sd = model.state_dict()
    c = crystal_from_torch(sd, tiny_data, sizes=[64, 12, 8, 10])
    with torch.no_grad():
        expect = model(torch.from_numpy(tiny_data.x_test)).numpy()
    np.testing.assert_allclose(c.reference.outputs[-1], expect, rtol=1e-6, atol=1e-6)
    with pytest.raises(CrystalError, match="needs sizes"):
        crystal_from_torch(sd, tiny_data)
    with pytest.raises(CrystalError, match=r"has shape \(12, 64\), sizes say \(13, 64\)"):
        crystal_from_torch(sd, tiny_data, sizes=[64, 13, 8, 10])


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Linear(64, 8), nn.Sigmoid(), nn.Linear(8, 10)), r"module 1 is a Sigmoid"),
    (nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 10)), r"hidden Linear 0 is not followed by ReLU"),
    (nn.Sequential(nn.Linear(63, 8), nn.ReLU(), nn.Linear(8, 10)), r"takes 63 inputs but data set 'digits' has 64"),
])
def test_unsupported_models_are_refused(tiny_data, model, message):
    with pytest.raises(CrystalError, match=message):
        crystal_from_torch(model, tiny_data)
