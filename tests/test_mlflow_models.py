"""MLflow as users expect: the experiment opens on its training runs, encoders and classifiers are MLflow models
in MLflow's safe ``pt2`` format (loading them runs no pickled code and needs no rs3l)."""

import contextlib
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from rs3l import tracking
from rs3l.models.classifier import build_classifier, load_model
from rs3l.models.encoders import build_encoder, encoder_params
from rs3l.models.inference import random_jets
from rs3l.models.mlflow_model import log_model, pack
from rs3l.resolve import resolve
from rs3l.training.data import load_arrays
from rs3l.training.finetune import finetune
from rs3l.training.pretrain import load_encoder, run
from synthetic import make_config, make_dataset

# (batch, particles): past the logged example's 24 particles, a single jet, single-particle jets
SHAPES = ((7, 33), (1, 5), (3, 1), (5, 64))


@contextlib.contextmanager
def pickle_warnings():
    """Collects what MLflow says about pickle while logging (its loggers do not propagate to pytest's)."""
    said = []

    class Collect(logging.Handler):
        def emit(self, record):
            said.append(record.getMessage())

    handler, logger = Collect(level=logging.WARNING), logging.getLogger("mlflow")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield said
        said += [str(w.message) for w in caught]
    finally:
        logger.removeHandler(handler)
    said[:] = [m for m in said if "pickle" in m.lower()]


def assert_loads_without_pickle_and_matches(uri, module, n_features, monkeypatch):
    """pyfunc loads the model with pickle disallowed (MLflow then checks the pt2 archive holds no pickled
    object) and reproduces ``module`` (x, mask) to 1e-5 at every shape of SHAPES."""
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    model = mlflow.pyfunc.load_model(uri)
    for i, (b, p) in enumerate(SHAPES):
        x, mask = random_jets(n_features, b, p, seed=10 + i)
        with torch.no_grad():
            ref = module.eval()(x, mask).numpy()
        np.testing.assert_allclose(model.predict(pack(x, mask).numpy()), ref, atol=1e-5, rtol=1e-5)
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, -1, n_features + 1)
    assert model.metadata.metadata["rs3l_format"] == "pt2"
    return model


def model_files(uri) -> set[str]:
    return {Path(p).name for p in Path(mlflow.artifacts.download_artifacts(uri)).rglob("*")}


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


def test_pretrained_encoder_is_an_mlflow_model(setup, monkeypatch):
    out = setup["tmp"] / "pretrain"
    with pickle_warnings() as said:
        s = run(setup["cfg"], setup["data"], out)
    assert not said
    encoder, info = load_encoder(out / "encoder.pt")
    uri = f"runs:/{s['run_id']}/encoder"
    assert "model.pt2" in model_files(uri) and "model.pth" not in model_files(uri)
    # pyfunc: numpy in, numpy out, any number of particles (the signature leaves that axis free)
    assert_loads_without_pickle_and_matches(uri, encoder, len(info["features"]), monkeypatch)
    loaded = mlflow.pytorch.load_model(uri)  # the exported module: one input, the mask as the last column
    x, mask = setup["x"], setup["mask"]
    with torch.no_grad():
        assert torch.allclose(loaded(pack(x, mask)), encoder.eval()(x, mask), atol=1e-5)


def test_finetuned_classifier_is_an_mlflow_model(setup, monkeypatch):
    out = setup["tmp"] / "scratch"
    with pickle_warnings() as said:
        meta = finetune(setup["cfg"], setup["data"], "top_vs_q", "scratch", 1.0, out)
    assert not said
    net, model_meta = load_model(out)
    uri = f"runs:/{meta['mlflow_run_id']}/classifier"
    assert "model.pt2" in model_files(uri)
    assert_loads_without_pickle_and_matches(uri, net, int(model_meta["n_features"]), monkeypatch)
    x, mask = setup["x"], setup["mask"]
    with torch.no_grad():
        assert net(x, mask).shape == (len(x), 1)
    run = mlflow.MlflowClient(tracking.tracking_uri(setup["cfg"])).get_run(meta["mlflow_run_id"])
    assert run.data.tags["rs3l.stage"] == "finetune"


def test_only_the_first_repeat_seed_logs_its_classifier_by_default(setup):
    """finetune.log_models first_seed (the default): repeat seed 1 writes model.pt but no MLflow model (the pt2
    export costs 5-12 s per arm on a CPU); log_models all logs it too."""
    def logged(meta):  # as test_finetuned_classifier_is_an_mlflow_model finds it
        try:
            return "model.pt2" in model_files(f"runs:/{meta['mlflow_run_id']}/classifier")
        except Exception:  # noqa: BLE001 - MLflow raises on a model that was not logged
            return False

    cfg = {**setup["cfg"], "finetune": {**setup["cfg"]["finetune"], "seeds": 2}}
    out = setup["tmp"] / "scratch-s1"
    meta = finetune(cfg, setup["data"], "top_vs_q", "scratch", 1.0, out, seed=1)
    assert (out / "model.pt").exists() and not logged(meta)
    cfg = {**cfg, "finetune": {**cfg["finetune"], "log_models": "all"}}
    assert logged(finetune(cfg, setup["data"], "top_vs_q", "scratch", 1.0, setup["tmp"] / "scratch-s1-all", seed=1))


def test_log_models_largest_picks_seed_0_of_the_largest_labelled_set():
    """log_models largest (the default run's): only repeat seed 0 of the last labelled set in
    label_sets order (counts ascending, then fractions ascending) logs an MLflow model."""
    from rs3l.training.finetune import logs_model

    cfg = resolve({"finetune": {"label_counts": [100, 30], "label_fractions": [1.0, 0.1], "log_models": "largest"}})
    assert [t for t in ("n30", "n100", "f0.1", "f1") if logs_model(cfg, t, 0)] == ["f1"]
    assert not logs_model(cfg, "f1", 1)
    cfg["finetune"].update(label_fractions=[])
    assert [t for t in ("n30", "n100") if logs_model(cfg, t, 0)] == ["n100"]
    first = {**cfg, "finetune": {**cfg["finetune"], "log_models": "first_seed"}}
    assert logs_model(first, "n30", 0) and not logs_model(first, "n30", 1)


FEATURES = ["part_deta", "part_dphi", "part_log_pt", "part_log_e", "part_charge"]


def small_config():
    return resolve({"training": {"features": FEATURES},
                    "encoders": {"particlenet": {"k": 4, "channels": [16, 16], "hidden": 32},
                                 "deepsets": {"hidden": 32}, "transformer": {"dim": 16, "heads": 2}}})


@pytest.mark.parametrize("what", ["particlenet", "transformer", "deepsets", "particle_transformer",
                                  "classifier(particlenet)"])
def test_every_encoder_and_a_classifier_log_in_the_safe_format(setup, what, monkeypatch):
    """Logged with serialization_format pt2 and no pickle warning; loads with pickle disallowed, same outputs."""
    cfg = small_config()
    torch.manual_seed(0)
    if what.startswith("classifier"):
        name = what[len("classifier("):-1]
        module = build_classifier(name, encoder_params(name, cfg), len(FEATURES), "mlp", 3, 16)
    else:
        module = build_encoder(what, cfg, len(FEATURES))
    module.eval()
    tracking.client(setup["cfg"])  # the test store
    with pickle_warnings() as said, mlflow.start_run(experiment_id=tracking.experiment_id(setup["cfg"]), run_name=what):
        uri = log_model(module, "model", FEATURES)
    assert not said
    assert "model.pt2" in model_files(uri) and "model.pth" not in model_files(uri)
    assert_loads_without_pickle_and_matches(uri, module, len(FEATURES), monkeypatch)


def test_loading_needs_neither_pickle_nor_rs3l(setup, tmp_path):
    """A fresh Python in which `import rs3l` fails loads the logged encoder and predicts what it predicts here."""
    module = build_encoder("particlenet", small_config(), len(FEATURES)).eval()
    tracking.client(setup["cfg"])
    with mlflow.start_run(experiment_id=tracking.experiment_id(setup["cfg"]), run_name="no-rs3l"):
        uri = log_model(module, "model", FEATURES)
    x, mask = random_jets(len(FEATURES), 6, 17, seed=5)
    np.save(tmp_path / "jets.npy", pack(x, mask).numpy())
    code = ("import sys; sys.modules['rs3l'] = None; sys.modules['weaver'] = None\n"
            "import mlflow, numpy as np\n"
            f"mlflow.set_tracking_uri({tracking.tracking_uri(setup['cfg'])!r})\n"
            f"model = mlflow.pyfunc.load_model({uri!r})\n"
            f"np.save({str(tmp_path / 'out.npy')!r}, model.predict(np.load({str(tmp_path / 'jets.npy')!r})))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-3000:]
    with torch.no_grad():
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), module(x, mask).numpy(), atol=1e-5, rtol=1e-5)


class NotAnRs3lEncoder(nn.Module):
    """(x, mask) -> (batch, 2), with no inference form: logged pickled."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(len(FEATURES), 2)

    def forward(self, x, mask):
        return (self.lin(x) * mask.unsqueeze(-1)).sum(1)


def test_a_module_without_an_inference_form_falls_back_to_pickle_and_says_so(setup, monkeypatch, caplog):
    tracking.client(setup["cfg"])
    with caplog.at_level(logging.WARNING, logger="rs3l.models.mlflow_model"), pickle_warnings() as said, \
            mlflow.start_run(experiment_id=tracking.experiment_id(setup["cfg"]), run_name="fallback"):
        uri = log_model(NotAnRs3lEncoder(), "model", FEATURES)
    assert "MLflow model of a NotAnRs3lEncoder: no inference form" in caplog.text and "logged pickled" in caplog.text
    assert said  # MLflow's own pickle warning: what the safe format avoids (and what pickle_warnings catches)
    assert "model.pth" in model_files(uri)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(mlflow.exceptions.MlflowException, match="pickle"):
        mlflow.pyfunc.load_model(uri)
