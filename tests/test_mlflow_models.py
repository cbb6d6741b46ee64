"""MLflow as users expect: the experiment opens on its training runs, encoders and classifiers are MLflow models."""

import mlflow
import numpy as np
import pytest
import torch

from rs3l import tracking
from rs3l.models.classifier import load_model
from rs3l.models.mlflow_model import pack
from rs3l.training.data import load_arrays
from rs3l.training.finetune import finetune
from rs3l.training.pretrain import load_encoder, run
from synthetic import make_config, make_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow_models")
    data = make_dataset(tmp / "data", n_jets_per_split={"train": 96, "val": 48, "test": 32}, replicas={"seed": 2},
                        seed=2)
    cfg = make_config(tmp / "results", pretrain={"epochs": 1, "patience": 0},
                      training={"max_constituents": 16},
                      encoders={"deepsets": {"hidden": 16, "latent_dim": 8}},
                      finetune={"max_steps": 6, "min_steps": 2, "val_every": 3, "warmup_steps": 1, "seeds": 1,
                                "tasks": {"top_vs_q": {"signal": ["top"], "background": ["q"]}}})
    val = load_arrays(data, "val", cfg["training"]["features"], 16, views=["nominal"], max_jets=20)
    return {"tmp": tmp, "data": data, "cfg": cfg, "x": torch.from_numpy(val["x"]), "mask": torch.from_numpy(val["mask"])}


def test_experiment_opens_in_the_model_training_view(setup):
    c = tracking.client(setup["cfg"])
    exp = c.get_experiment(tracking.experiment_id(setup["cfg"]))
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # an experiment made without the kind (an older rs3l, or by hand) gets it on the next use
    cfg = {**setup["cfg"], "tracking": {**setup["cfg"]["tracking"], "experiment": "made-by-hand"}}
    bare = c.create_experiment("made-by-hand", artifact_location=(setup["tmp"] / "art").as_uri())
    assert "mlflow.experimentKind" not in c.get_experiment(bare).tags
    assert tracking.experiment_id(cfg) == bare
    assert c.get_experiment(bare).tags["mlflow.experimentKind"] == "custom_model_development"


def test_pretrained_encoder_is_an_mlflow_model(setup):
    out = setup["tmp"] / "pretrain"
    s = run(setup["cfg"], setup["data"], out)
    encoder, info = load_encoder(out / "encoder.pt")
    loaded = mlflow.pytorch.load_model(f"runs:/{s['run_id']}/encoder")
    x, mask = setup["x"], setup["mask"]
    with torch.no_grad():
        ref = encoder.eval()(x, mask)
        assert torch.allclose(loaded(pack(x, mask)), ref, atol=1e-6)
        assert torch.allclose(loaded.model(x, mask), ref, atol=1e-6)  # the rs3l (x, mask) module inside
    # pyfunc: numpy in, numpy out, any number of particles (the signature leaves that axis free)
    model = mlflow.pyfunc.load_model(f"runs:/{s['run_id']}/encoder")
    jets = pack(x[:, :9], mask[:, :9]).numpy()
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(jets), encoder(x[:, :9], mask[:, :9]).numpy(), atol=1e-6)
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, -1, len(info["features"]) + 1)


def test_finetuned_classifier_is_an_mlflow_model(setup):
    out = setup["tmp"] / "scratch"
    meta = finetune(setup["cfg"], setup["data"], "top_vs_q", "scratch", 1.0, out)
    net, _ = load_model(out)
    loaded = mlflow.pytorch.load_model(f"runs:/{meta['mlflow_run_id']}/classifier")
    x, mask = setup["x"], setup["mask"]
    with torch.no_grad():
        ref = net(x, mask)
        assert ref.shape == (len(x), 1)
        assert torch.allclose(loaded(pack(x, mask)), ref, atol=1e-6)
    run = mlflow.MlflowClient(tracking.tracking_uri(setup["cfg"])).get_run(meta["mlflow_run_id"])
    assert run.data.tags["rs3l.stage"] == "finetune"
